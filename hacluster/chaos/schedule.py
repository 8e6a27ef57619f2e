"""Seeded fault schedules for chaos runs on real pools.

Rules:

* A schedule is a pure function of ``(backend, hosts, T, seed, rate)``: the
  same inputs give the same faults, in the same order, with the same targets,
  holds and gaps. It is an endless stream; the runner takes faults from it
  until its duration is spent.
* Faults come one at a time. Each waits its ``gap`` of quiet (exponential,
  mean ``60 / rate`` seconds, at least :data:`MIN_GAP`), is injected, held for
  ``hold`` seconds and healed; the runner then restarts the hosts that died
  and waits for the pool to settle. The schedule fixes the faults; how fast
  the pool recovers fixes when they happen.
* A target is a host number or ``"master"``, resolved when the fault is
  injected, so that masters fail as often as members do.
* Holds are drawn from the pool's timing so every fault means something: a
  pause is either short (below the stall limit: the pool must ride through
  it, nobody fences) or long (past the watchdog: the host must fence); cuts
  and storage faults last long enough to remove a host; a freeze of a whole
  container stays below the stall limit (a frozen host's watchdog is frozen
  too, so a longer one would defeat any software watchdog).
* Each backend has its own faults (:data:`KINDS`); a partition needs two
  hosts or more.
* One draw in :data:`OPERATION_SHARE` is an operator's VM lifecycle
  operation instead (:data:`OPERATIONS`): migrate a protected VM to a host,
  reboot it, suspend it for a hold then resume it, or rebalance the pool. The
  VM is an index into the lab's sorted protected VMs, resolved when it runs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from hacluster.core.timing import Timing
from hacluster.sim.schedules import random_groups

KINDS: dict[str, tuple[str, ...]] = {
    "netns": ("kill", "pause", "partition", "one-way", "storage"),
    "docker": ("kill", "pause", "freeze", "disconnect", "restart"),
}
OPERATIONS = ("migrate", "reboot", "suspend", "rebalance")
OPERATION_SHARE = 0.25
STORAGE_MODES = ("error", "hang", "slow")
MIN_GAP = 1.0
MASTER = "master"

Target = int | str  # a host number, or MASTER


@dataclass(frozen=True)
class Fault:
    kind: str
    target: Target = MASTER
    hold: float = 0.0
    gap: float = MIN_GAP
    groups: tuple[tuple[int, ...], ...] = ()  # partition
    peer: int | None = None  # one-way: ``peer`` stops hearing ``target``
    mode: str = ""  # storage: error, hang or slow
    vm: int = 0  # operations: index into the sorted protected VMs

    @property
    def operation(self) -> bool:
        return self.kind in OPERATIONS

    def describe(self, target: int | None = None, vm: str | None = None) -> str:
        """One line for reports; ``target`` is the host the target resolved to, ``vm``
        the VM an operation's index resolved to."""
        which = vm or f"protected VM #{self.vm}"
        who = f"host {target}" if target is not None else (
            "the master" if self.target == MASTER else f"host {self.target}")
        if self.kind == "partition":
            return f"partition {' | '.join(','.join(map(str, g)) for g in self.groups)}" \
                   f" for {self.hold:.1f}s"
        if self.kind == "one-way":
            return f"host {self.peer} deaf to {who} for {self.hold:.1f}s"
        if self.kind == "storage":
            return f"storage {self.mode} on {who} for {self.hold:.1f}s"
        if self.kind == "restart":
            return f"restart {who}"
        if self.kind == "migrate":
            return f"migrate {which} to {who}"
        if self.kind == "reboot":
            return f"reboot {which}"
        if self.kind == "suspend":
            return f"suspend {which} for {self.hold:.1f}s, then resume it"
        if self.kind == "rebalance":
            return "rebalance the pool"
        if self.kind == "kill":
            return f"kill {who}, back after {self.hold:.1f}s"
        return f"{self.kind} {who} for {self.hold:.1f}s"


def schedule(backend: str, hosts: int, timeout: float, seed: int,
             rate: float) -> Iterator[Fault]:
    """The endless fault stream of one seed (see the module rules)."""
    if backend not in KINDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(KINDS)}")
    if hosts < 2:
        raise ValueError("a chaos run needs two hosts or more")
    if not rate > 0:
        raise ValueError(f"the fault rate must be positive, got {rate}")
    timing = Timing.derive(timeout)
    rng = random.Random(seed)
    while True:
        yield _fault(rng, KINDS[backend], hosts, timing, rate)


def _target(rng: random.Random, hosts: int) -> Target:
    return MASTER if rng.random() < 0.4 else rng.randrange(hosts)


def _fault(rng: random.Random, kinds: tuple[str, ...], hosts: int, timing: Timing,
           rate: float) -> Fault:
    operation = rng.random() < OPERATION_SHARE
    kind = rng.choice(OPERATIONS if operation else kinds)
    gap = max(MIN_GAP, rng.expovariate(rate / 60.0))
    if operation:
        return Fault(kind, _target(rng, hosts), rng.uniform(0.2, 2.0), gap,
                     vm=rng.randrange(1 << 16))
    T = timing.T
    cut = rng.uniform(1.2 * T, 3.0 * T)  # long enough for the pool to remove a host
    short = rng.uniform(0.05, 0.6) * timing.stall_limit
    if kind == "kill":
        return Fault(kind, _target(rng, hosts), rng.uniform(0.5, 3.0 * T), gap)
    if kind == "pause":
        hold = short if rng.random() < 0.5 else rng.uniform(timing.lease + 0.5,
                                                             timing.lease + T)
        return Fault(kind, _target(rng, hosts), hold, gap)
    if kind == "freeze":
        return Fault(kind, _target(rng, hosts), short, gap)
    if kind == "partition":
        groups = tuple(tuple(g) for g in random_groups(rng, hosts))
        return Fault(kind, groups[0][0], cut, gap, groups=groups)
    if kind == "one-way":
        sender, peer = rng.sample(range(hosts), 2)
        return Fault(kind, sender, cut, gap, peer=peer)
    if kind == "storage":
        return Fault(kind, _target(rng, hosts), cut, gap, mode=rng.choice(STORAGE_MODES))
    if kind == "disconnect":
        return Fault(kind, _target(rng, hosts), cut, gap)
    return Fault(kind, _target(rng, hosts), 0.0, gap)  # restart
