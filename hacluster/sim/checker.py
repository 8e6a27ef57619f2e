"""Continuous checker of the safety and liveness properties (spec section 11).

Properties, checked at the instant each event happens:

1. **single-run**: no VM runs on two hosts at once.
2. **fence-before-commit**: a host removed from a committed liveset is dead
   (crashed or fenced, its VMs stopped) when the commit happens, unless it
   left cleanly.
3. **single-master**: at most one live daemon believes it holds the master
   lock.
4. **restart-bound**: after a fault the schedule marks as within tolerance,
   every protected VM runs again by the bound derived from T and the pool's
   order groups. With groups g = 1..G of protected VMs (ascending ``order``),
   d_g the largest ``start_delay`` in group g and b the simulated boot time::

       bound = T + fence_window + 4·max(t1, t2)       detection, fence, election
             + G·(b + t1)                              each group boots; a pass notices
             + d_1 + ... + d_(G-1)                     each group's delay before the next

   (the last group's delay holds nothing back).
5. **settle**: once the faults are over (the last one healed) and dead hosts
   are restarted, the pool settles: every host NORMAL with the whole pool as
   its liveset, one master, every protected VM running. The bound adds to the
   restart bound a fenced host's reboot delay and T for joiners to be admitted::

       settle = reboot_after + restart_bound + T

   No state of the pool may wait forever on a host that is alive again.
6. **outcome** (named scenarios): the survivors and fenced hosts are the ones
   the spec predicts.

A violation records the property, the time and a readable explanation; the
simulation prints it with the seed and the trace that led to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hacluster.core.pool import Pool
from hacluster.core.timing import Timing
from hacluster.sim.trace import Trace


@dataclass(frozen=True)
class Violation:
    time: float
    prop: str
    text: str

    def line(self) -> str:
        return f"VIOLATION {self.prop} at {self.time:.3f}s: {self.text}"


def restart_bound(timing: Timing, group_delays: Sequence[float] = (),
                  boot: float = 0.0) -> float:
    """Fault to every protected VM running again (the formula is in the module docstring).

    Without groups it is the time to detect, fence and commit a failure.
    """
    base = timing.T + timing.fence_window + 4 * max(timing.t1, timing.t2)
    return base + len(group_delays) * (boot + timing.t1) + sum(group_delays[:-1])


def settle_bound(timing: Timing, reboot_after: float, group_delays: Sequence[float] = (),
                 boot: float = 0.0) -> float:
    """Faults over to a settled pool (the formula is in the module docstring)."""
    return reboot_after + restart_bound(timing, group_delays, boot) + timing.T


def order_group_delays(pool: Pool) -> list[float]:
    """The largest ``start_delay`` of each order group of protected VMs, by ascending order."""
    delays: dict[int, float] = {}
    for vm in pool.vms:
        if vm.priority.protected:
            delays[vm.order] = max(delays.get(vm.order, 0.0), vm.start_delay)
    return [delays[order] for order in sorted(delays)]


@dataclass
class Checker:
    trace: Trace
    violations: list[Violation] = field(default_factory=list)
    running: dict[str, set[int]] = field(default_factory=dict)

    def violate(self, time: float, prop: str, text: str) -> None:
        violation = Violation(time, prop, text)
        self.violations.append(violation)
        self.trace.record(time, None, "VIOLATION", f"{prop}: {text}")

    def vm_started(self, time: float, vm: str, host: int) -> None:
        hosts = self.running.setdefault(vm, set())
        if hosts - {host}:
            self.violate(time, "single-run", f"{vm} started on host {host} while running on "
                         f"{sorted(hosts)}")
        hosts.add(host)

    def vm_stopped(self, vm: str, host: int) -> None:
        self.running.get(vm, set()).discard(host)

    def committed(self, time: float, host: int, removed: set[int], undead: set[int]) -> None:
        """``undead``: removed hosts whose member incarnation is still running."""
        if undead:
            self.violate(time, "fence-before-commit", f"host {host} committed removal of "
                         f"{sorted(removed)} but {sorted(undead)} had not fenced")

    def master_gained(self, time: float, host: int, other_masters: set[int]) -> None:
        if other_masters:
            self.violate(time, "single-master", f"host {host} became master while "
                         f"{sorted(other_masters)} still held the lock")

    def restart_due(self, time: float, fault: str, down: list[str]) -> None:
        if down:
            self.violate(time, "restart-bound", f"after {fault}, protected VMs {down} not "
                         "running again within the bound")

    def settle_due(self, time: float, after: str, problems: Sequence[str]) -> None:
        if problems:
            self.violate(time, "settle", f"the pool did not settle after {after}: "
                         + "; ".join(problems))

    def outcome(self, time: float, what: str, expected: object, actual: object) -> None:
        if expected != actual:
            self.violate(time, "outcome", f"{what}: expected {expected}, got {actual}")
