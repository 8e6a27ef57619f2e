"""One host's liveness state machine: domains, fault handler, liveset, master lock.

:class:`HostCore` composes the layers of :mod:`hacluster.core.host`, each a
mixin over one shared :class:`~hacluster.core.host.state.HostState` whose
module states its rules: ``state`` (the one way to change phase),
``domains`` (which reports count, who is in my domains), ``reports`` (what I
publish, watchdogs), ``lock`` (the master lock), ``membership`` (joining,
cold start, shutdown, commits), ``faults`` (the fault handler, fence
requests) and ``waits`` (what I wait for). The phases and every allowed
change between them are the table of :mod:`hacluster.core.phases`; the
design is explained in docs/design.md.

Rules:

* :meth:`HostCore.handle` takes one input stamped with the host's monotonic
  ``now`` and returns the outputs, always ending with one :class:`Wakeup`.
  It evaluates when the input is notable or an evaluation is due (every tick,
  beat and, in statefile mode, slot I/O).
* **Stalls.** An armed core that was not run for ``stall_limit`` fences
  itself on waking, before looking at anything that queued meanwhile.
* FENCED and EXCLUDED hosts ignore every input.
* **Members** change with :class:`~hacluster.core.events.MembersChanged`
  (``membership`` states the rules); a host no longer listed leaves
  (``faults``: ejected).
* **A step** computes the domains first. A joiner then tries to join, then
  to cold-start; a member tracks suspects, drops excluded
  members, obeys fence requests, runs the fault handler and admits joiners,
  each only while it is still armed. Unless fenced, it then updates the lock
  and, once a beat, says what it waits for, pets and sends a heartbeat; in
  statefile mode, every t2 with no I/O pending, it writes its slot and reads
  all slots.
* After every input the invariants of :mod:`hacluster.core.phases` hold; a
  broken one raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hacluster.core import phases
from hacluster.core.events import (
    HeartbeatReceived,
    Input,
    MembersChanged,
    Output,
    ReadSlots,
    Shutdown,
    SlotsRead,
    SlotWritten,
    Wakeup,
    WriteSlot,
)
from hacluster.core.host.state import NEVER, CoreConfig, Counters, Mode, Peer
from hacluster.core.host.waits import Waits
from hacluster.core.messages import Phase
from hacluster.core.phases import Trigger

__all__ = ["NEVER", "CoreConfig", "Counters", "HostCore", "Mode", "Peer"]


@dataclass
class HostCore(Waits):
    """The pure liveness core of host ``me``; feed it inputs with :meth:`handle`."""

    def __post_init__(self) -> None:
        if not 0 <= self.me < self.config.hosts:
            raise ValueError(f"host index {self.me} outside 0..{self.config.hosts - 1}")
        self.timing = self.config.timing
        self.statefile_mode = self.config.mode is Mode.STATEFILE
        self._fresh_for = min(self.timing.T1, self.timing.T2)
        self.peers = [Peer() for _ in range(self.config.hosts)]
        self.members = self._wanted = self.config.initial_members
        if self.me not in self.members:
            raise ValueError(f"host index {self.me} is not one of the members "
                             f"{sorted(self.members)}")
        self.peers[self.me].pinned_boot = self.boot
        if self.liveset is not None:
            self._arm(self.liveset, Trigger.HA_ENABLE)
        self._next_beat = self.now
        self._next_io = self.now

    def handle(self, event: Input) -> list[Output]:
        """Consume one input; return the outputs, ending with a :class:`Wakeup`.

        Raises :class:`hacluster.core.phases.IllegalTransition` or
        :class:`~hacluster.core.phases.InvariantViolation` if the core broke
        its own state machine (:mod:`hacluster.core.phases`)."""
        out = self._handle(event)
        phases.check_invariants(self)
        return out

    def _handle(self, event: Input) -> list[Output]:
        if self.phase in (Phase.FENCED, Phase.EXCLUDED):
            return [Wakeup(math.inf)]
        stalled = event.now - self.now
        self.now = max(self.now, event.now)
        self._forget_derived()  # what is derived from peers is of one moment
        self._out = []
        if self.armed and stalled > self.timing.stall_limit:
            self._fence(f"daemon stalled for {stalled:.2f}s: peers may have removed me",
                        Trigger.STALL)
            return [*self._out, Wakeup(math.inf)]
        interesting = True
        if isinstance(event, HeartbeatReceived):
            interesting = self._on_heartbeat(event.report)
        elif isinstance(event, SlotWritten):
            self._io_pending -= 1
            if not event.ok:
                self.counters.write_errors += 1
        elif isinstance(event, SlotsRead):
            self._io_pending -= 1
            self._on_slots(event)
        elif isinstance(event, Shutdown):
            self._shutdown()
            return [*self._out, Wakeup(math.inf)]
        elif isinstance(event, MembersChanged) and not self._change_members(event.members):
            self._ejected()
            return [*self._out, Wakeup(math.inf)]
        if interesting or self.now >= (at := self._next_eval()):
            self._step()
            at = self._next_eval()
        out = self._out
        out.append(Wakeup(at if self.phase not in (Phase.FENCED,) else math.inf))
        return out

    def _next_eval(self) -> float:
        at = min(self._next_beat, self.now + self.timing.tick)
        if self.statefile_mode and self._io_pending == 0:
            at = min(at, max(self._next_io, self.now))
        return at

    def _step(self) -> None:
        now = self.now
        self._compute_domains()
        if self.phase is Phase.JOINING:
            self._try_join()
            if self.phase is Phase.JOINING:
                self._try_cold_start()
        else:
            self._track_suspects()
            self._drop_excluded_members()
            if self.armed:
                self._obey_fence_requests()
            if self.armed:
                self._run_fault_handler()
            if self.armed:
                self._admit_joiners()
        if self.phase is Phase.FENCED:
            return
        self._update_lock()
        if now >= self._next_beat:
            self._next_beat = now + self.timing.t1
            self._publish_waits()  # once a beat, not once a packet: it is for people
            self._pet()
            self._publish_heartbeat()
        if self.statefile_mode and now >= self._next_io and self._io_pending == 0:
            self._next_io = now + self.timing.t2
            self._io_pending = 2
            report = self._report()
            self._write_issued = (report.seq, now)
            self._out.append(WriteSlot(report))
            self._out.append(ReadSlots())
