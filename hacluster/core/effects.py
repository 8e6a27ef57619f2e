"""The one interpreter of the cores' outputs: each output becomes one effect call.

Rules:

* :func:`carry_out` walks a :meth:`HostCore.handle` result in order and calls
  the matching :class:`Effects` method; :func:`carry_out_duties` does the same
  for a :meth:`Duties.handle` result with :class:`DutyEffects`. Both dispatch
  with ``match`` and end in ``assert_never``: a new output that no adapter
  carries out fails the type check, not a pool.
* An adapter binds the effects to its world: the daemon to sockets, its
  storage thread and the watchdog process; the simulator to its fake
  network, volume and clock. Neither decides anything: what a liveset commit
  means for the master's duties is :func:`duty_inputs`, here, once.
* Pure: this module calls its effects and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, assert_never

from hacluster.core.duties import DutyAction, ExitSeen, Plan, PlanChanged, TookOver
from hacluster.core.events import (
    Disarmed,
    Fence,
    LivesetCommitted,
    MasterGained,
    MasterLost,
    Output,
    PetWatchdog,
    PhaseChanged,
    ReadSlots,
    SendHeartbeat,
    Suspect,
    Wait,
    Waiting,
    Wakeup,
    Watchdog,
    WriteSlot,
)
from hacluster.core.messages import HostSet, Report
from hacluster.core.restarts import Alert, ForceHalt, HostsFailed, HostsLeft, StartVM


class Effects(Protocol):
    """What an adapter does for a host core's outputs."""

    def send_heartbeat(self, report: Report, to: HostSet) -> None: ...
    def request_io(self, request: WriteSlot | ReadSlots) -> None: ...
    def pet_watchdog(self, which: Watchdog, timeout: float) -> None: ...
    def fence(self, reason: str) -> None: ...
    def disarmed(self, reason: str) -> None: ...
    def liveset_committed(self, commit: LivesetCommitted) -> None: ...
    def master_gained(self) -> None: ...
    def master_lost(self, reason: str) -> None: ...
    def phase_changed(self, change: PhaseChanged) -> None: ...
    def suspect(self, host: int, channel: str) -> None: ...
    def waiting(self, waits: tuple[Wait, ...]) -> None: ...
    def wake_at(self, at: float) -> None: ...


def carry_out(outputs: Iterable[Output], effects: Effects) -> None:
    """Carry out a host core's outputs, in order."""
    for out in outputs:
        match out:
            case Wakeup(at=at):  # first: every input ends with one
                effects.wake_at(at)
            case SendHeartbeat(report=report, to=to):
                effects.send_heartbeat(report, to)
            case WriteSlot() | ReadSlots():
                effects.request_io(out)
            case PetWatchdog(which=which, timeout=timeout):
                effects.pet_watchdog(which, timeout)
            case Fence(reason=reason):
                effects.fence(reason)
            case Disarmed(reason=reason):
                effects.disarmed(reason)
            case LivesetCommitted():
                effects.liveset_committed(out)
            case MasterGained():
                effects.master_gained()
            case MasterLost(reason=reason):
                effects.master_lost(reason)
            case PhaseChanged():
                effects.phase_changed(out)
            case Suspect(host=host, channel=channel):
                effects.suspect(host, channel)
            case Waiting(waits=waits):
                effects.waiting(waits)
            case _:
                assert_never(out)


class DutyEffects(Protocol):
    """What an adapter does for the master's duties."""

    def start_vm(self, start: StartVM) -> None: ...
    def force_halted(self, vm: str, host: str) -> None: ...
    def alert(self, alert: Alert) -> None: ...
    def took_over(self, event: TookOver) -> None: ...
    def exit_seen(self, event: ExitSeen) -> None: ...
    def plan_changed(self, plan: Plan) -> None: ...


def carry_out_duties(actions: Iterable[DutyAction], effects: DutyEffects) -> None:
    """Carry out the master's duty actions, in order."""
    for action in actions:
        match action:
            case StartVM():
                effects.start_vm(action)
            case ForceHalt(vm=vm, host=host):
                effects.force_halted(vm, host)
            case Alert():
                effects.alert(action)
            case TookOver():
                effects.took_over(action)
            case ExitSeen():
                effects.exit_seen(action)
            case PlanChanged(plan=plan):
                effects.plan_changed(plan)
            case _:
                assert_never(action)


def duty_inputs(now: float, commit: LivesetCommitted,
                uuids: Sequence[str]) -> list[HostsFailed | HostsLeft]:
    """What a liveset commit tells the master's duties (host ``i`` is ``uuids[i]``):
    hosts removed by a fault failed (they fenced); hosts that shut down left."""
    inputs: list[HostsFailed | HostsLeft] = []
    if failed := commit.removed - commit.excluded:
        inputs.append(HostsFailed(now, frozenset(uuids[i] for i in failed)))
    if commit.excluded:
        inputs.append(HostsLeft(now, frozenset(uuids[i] for i in commit.excluded)))
    return inputs
