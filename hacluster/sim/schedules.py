"""Random hostile fault schedules, generated from a seed.

Rules:

* A schedule is a pure function of ``(hosts, mode, seed)``: the same seed
  always yields the same faults at the same times and the same run.
* Background network misbehaviour (loss, duplication, reordering jitter) and
  clock-rate skew are drawn once per schedule.
* A schedule is a few episodes. Each injects one fault (sometimes two at
  once) at a random moment, heals it after a random duration, reboots dead
  hosts so they rejoin, and lets the pool settle before the next episode.
* Independently (from a second stream, so the host, network and storage
  faults of a seed stay what they were), an episode may also see a VM stop by
  itself: a crash or a shutdown from inside its guest.
* A lone crash within tolerance also arms the restart-bound check.
* From a third stream, an episode may restart every dead host right after the
  heal (as a chaos runner or an operator does) and may inject one more fault
  (a pause, a partition, an isolation or a storage fault) overlapping those
  restarts.
* From a fourth stream, an episode may eject a random host (at a random
  moment around its fault, so the two can overlap) and later have a new host
  join on the freed index.
* From a fifth stream, an episode may see a power cut: every host crashes at
  once during the episode and boots again within 1.5 T, one by one, so the
  pool re-forms by a cold start.
* Every episode ends with the settle check: once its last fault is over, the
  pool must settle within the bound derived from T, before the next episode.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hacluster.core.node import Mode
from hacluster.core.survival import quorate
from hacluster.sim.cluster import SimConfig, Simulation
from hacluster.sim.network import NetworkConditions
from hacluster.sim.storage import IOFault
from hacluster.sim.trace import Trace

TRACE_KEEP = 200  # trace lines kept for a violation report

Action = Callable[[Simulation], None]


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Action
    heal: Action
    crash_of: int | None = None
    lasts: float = 0.0  # how long it acts after injection whatever the heal (pauses, flaps)


@dataclass
class ScheduleResult:
    hosts: int
    mode: Mode
    seed: int
    faults: list[str]
    violations: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    simulated: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self) -> str:
        head = (f"schedule seed={self.seed} hosts={self.hosts} mode={self.mode.value}: "
                f"{len(self.violations)} violation(s)")
        lines = [head, *self.violations, "faults: " + "; ".join(self.faults),
                 "trace (most recent events):", *self.trace]
        return "\n".join(lines)


def _nothing(sim: Simulation) -> None:
    pass


def random_groups(rng: random.Random, hosts: int) -> list[list[int]]:
    """Two or three non-empty groups covering every host once (needs two hosts or more)."""
    count = rng.randint(2, min(3, hosts))
    order = list(range(hosts))
    rng.shuffle(order)
    cuts = sorted(rng.sample(range(1, hosts), count - 1))
    bounds = [0, *cuts, hosts]
    return [sorted(order[a:b]) for a, b in itertools.pairwise(bounds)]


HOST_FAULTS = ["crash", "pause", "isolate", "partition", "one-way", "flap", "shutdown"]
STORAGE_FAULTS = ["storage-error", "storage-read-error", "storage-write-error", "storage-hang",
                  "storage-slow", "statefile-lost", "corrupt"]
VM_EXIT_CHANCE = 0.3  # of an episode also seeing a VM stop by itself
RESTART_AT_HEAL_CHANCE = 0.5  # of an episode restarting its dead hosts right after the heal
OVERLAP_CHANCE = 0.4  # of an episode seeing one more fault overlap those restarts
OVERLAP_FAULTS = ["pause", "partition", "isolate", "storage-error", "storage-hang"]
MEMBERSHIP_CHANCE = 0.3  # of an episode also ejecting a host, then joining a new one
POWER_CUT_CHANCE = 0.1  # of an episode seeing every host crash at once, then boot again


def random_fault(rng: random.Random, hosts: int, mode: Mode, T: float,
                 menu: Sequence[str] | None = None) -> Fault:
    """One fault drawn from ``menu`` (default: every fault), as far as the mode allows."""
    allowed = [*HOST_FAULTS, *(STORAGE_FAULTS if mode is Mode.STATEFILE else [])]
    kinds = [k for k in (allowed if menu is None else menu) if k in allowed]
    kind = rng.choice(kinds)
    h = rng.randrange(hosts)
    other = rng.choice([x for x in range(hosts) if x != h])
    if kind == "crash":
        return Fault(f"crash {h}", lambda s: s.crash(h), lambda s: s.reboot(h), crash_of=h)
    if kind == "pause":
        seconds = rng.uniform(0.2, 3.0) * T
        return Fault(f"pause {h} {seconds:.2f}s", lambda s: s.pause(h, seconds), _nothing,
                     lasts=seconds)
    if kind == "isolate":
        return Fault(f"isolate {h}", lambda s: s.isolate(h), lambda s: s.heal_network())
    if kind == "partition":
        groups = random_groups(rng, hosts)
        return Fault(f"partition {groups}", lambda s: s.partition(groups),
                     lambda s: s.heal_network())
    if kind == "one-way":
        return Fault(f"drop {h}->{other}", lambda s: s.drop_from(h, other),
                     lambda s: s.heal_network())
    if kind == "flap":
        period = rng.uniform(0.3, 1.5) * T

        def flap(s: Simulation) -> None:
            for k in range(4):
                s.at(s.t + 2 * k * period, lambda: s.cut_link(h, other))
                s.at(s.t + (2 * k + 1) * period, s.heal_network)

        return Fault(f"flap {h}-{other} every {period:.2f}s", flap, lambda s: s.heal_network(),
                     lasts=7 * period)
    if kind == "vm-exit":
        return random_vm_exit(rng)
    if kind == "shutdown":
        return Fault(f"clean shutdown {h}", lambda s: s.shutdown(h), lambda s: s.reboot(h))
    if kind == "statefile-lost":
        return Fault(
            "statefile lost everywhere",
            lambda s: s.storage_fault_all(IOFault.ERROR),
            lambda s: s.storage_fault_all(IOFault.OK),
        )
    if kind == "corrupt":
        return Fault(f"corrupt slot {h}", lambda s: s.corrupt_slot(h),
                     lambda s: s.corrupt_slot(h, corrupted=False))
    fault = {"storage-error": IOFault.ERROR, "storage-read-error": IOFault.READ_ERROR,
             "storage-write-error": IOFault.WRITE_ERROR, "storage-hang": IOFault.HANG,
             "storage-slow": IOFault.SLOW}[kind]
    return Fault(f"storage {fault.value} on {h}", lambda s: s.storage_fault(h, fault),
                 lambda s: s.storage_fault(h, IOFault.OK))


def random_vm_exit(rng: random.Random) -> Fault:
    """A VM (picked when it happens, among those of the pool) crashes or shuts down inside."""
    pick, inside = rng.randrange(1 << 16), rng.random() < 0.5

    def exit_vm(s: Simulation) -> None:
        s.vm_exit(s.vms[pick % len(s.vms)], internal_shutdown=inside)

    return Fault(f"VM #{pick} {'shuts down inside' if inside else 'crashes'}", exit_vm, _nothing)


def run_schedule(
    hosts: int, seed: int, mode: Mode = Mode.STATEFILE, timeout: float = 5.0,
    episodes: int = 2, simulation: type[Simulation] = Simulation,
) -> ScheduleResult:
    """Run one random schedule under the checker (``simulation``: a subclass
    that observes more, for benchmarks)."""
    rng = random.Random(f"schedule:{hosts}:{mode.value}:{seed}")
    T = timeout
    conditions = NetworkConditions(
        loss=rng.choice([0.0, 0.0, 0.01, 0.05]),
        duplicate=rng.choice([0.0, 0.01, 0.05]),
        jitter=rng.choice([0.001, 0.01, 0.3 * min(T / 10, 3.0)]),
    )
    config = SimConfig(hosts=hosts, seed=rng.getrandbits(32), timeout=T, mode=mode,
                       skew=rng.choice([0.0, 0.002, 0.005]), network=conditions,
                       reboot_after=2 * T)
    sim = simulation(config, trace=Trace(keep=TRACE_KEEP))
    names = [f"network loss={conditions.loss} dup={conditions.duplicate} "
             f"jitter={conditions.jitter:.3f}s skew<={config.skew}"]
    vm_rng = random.Random(f"vm-exits:{hosts}:{mode.value}:{seed}")
    after_rng = random.Random(f"after-heal:{hosts}:{mode.value}:{seed}")
    member_rng = random.Random(f"membership:{hosts}:{mode.value}:{seed}")
    power_rng = random.Random(f"blackout:{hosts}:{mode.value}:{seed}")
    start = 2 * T
    for _ in range(episodes):
        faults = [random_fault(rng, hosts, mode, T)]
        if rng.random() < 0.3:
            faults.append(random_fault(rng, hosts, mode, T))
        at = start + rng.uniform(0, T)
        duration = rng.uniform(0.5, 3.0) * T
        for fault in faults:
            names.append(f"{fault.name} at {at:.1f}s for {duration:.1f}s")
            _play(sim, fault, at, duration)
        episode, overlapped = names[-1], False
        over = at + max(duration, *(f.lasts for f in faults))
        if power_rng.random() < POWER_CUT_CHANCE:
            over = max(over, _power_cut(sim, power_rng, at + power_rng.uniform(0, duration),
                                        names))
            overlapped = True  # no restart bound: every host went down
        if after_rng.random() < RESTART_AT_HEAL_CHANCE:
            restart_at = over + after_rng.uniform(0, 0.3) * T
            names.append(f"restart dead hosts at {restart_at:.1f}s")
            sim.at(restart_at, lambda: _restart_dead(sim))
            if after_rng.random() < OVERLAP_CHANCE:
                extra = random_fault(after_rng, hosts, mode, T, OVERLAP_FAULTS)
                extra_at = restart_at + after_rng.uniform(-0.2, 0.5) * T
                extra_for = after_rng.uniform(0.3, 1.5) * T
                names.append(f"{extra.name} at {extra_at:.1f}s for {extra_for:.1f}s")
                _play(sim, extra, extra_at, extra_for)
                over = max(over, extra_at + max(extra_for, extra.lasts))
                overlapped = True
        if hosts > 2 and member_rng.random() < MEMBERSHIP_CHANCE:
            over = max(over, _eject_and_join(sim, member_rng, names, at, T))
            overlapped = True
        if vm_rng.random() < VM_EXIT_CHANCE:
            exit_at = at + vm_rng.uniform(0, duration + 2 * T)
            vm_exit = random_vm_exit(vm_rng)
            names.append(f"{vm_exit.name} at {exit_at:.1f}s")
            sim.at(exit_at, lambda f=vm_exit: f.inject(sim))  # type: ignore[misc]
        lone = faults[0].crash_of if len(faults) == 1 and not overlapped else None
        if lone is not None:
            sim.at(at, lambda n=episode, h=lone: _expect_restart(sim, n, h))  # type: ignore[misc]
        start = max(at + duration + 5 * T, sim.expect_settled(episode, start=over))
    sim.run_until(start)
    result = ScheduleResult(hosts, mode, seed, names, simulated=sim.t)
    if sim.checker.violations:
        result.violations = [v.line() for v in sim.checker.violations]
        result.trace = sim.trace.lines()
    return result


def _eject_and_join(sim: Simulation, rng: random.Random, names: list[str], at: float,
                    T: float) -> float:
    """Eject a random host around ``at``, then join a new host on its index;
    returns when the join happens."""
    host = rng.randrange(sim.config.hosts)
    eject_at = at + rng.uniform(0.0, 1.5) * T  # after the last settle check
    join_at = eject_at + rng.uniform(1.0, 3.0) * T
    names.append(f"eject {host} at {eject_at:.1f}s, a new host joins on index {host} at "
                 f"{join_at:.1f}s")
    sim.at(eject_at, lambda: sim.eject(host))
    sim.at(join_at, lambda: sim.join(host))
    return join_at


def _play(sim: Simulation, fault: Fault, at: float, duration: float) -> None:
    sim.at(at, lambda: fault.inject(sim))
    sim.at(at + duration, lambda: fault.heal(sim))


def _power_cut(sim: Simulation, rng: random.Random, at: float, names: list[str]) -> float:
    """Every host crashes at ``at`` and boots again within 1.5 T, one by one;
    returns when the last is back."""
    T = sim.timing.T
    back = [at + rng.uniform(0.1, 1.5) * T for _ in sim.hosts]
    names.append(f"power cut at {at:.1f}s, hosts back at "
                 + ", ".join(f"{b:.1f}s" for b in back))
    sim.at(at, lambda: _crash_all(sim))
    for index, when in enumerate(back):
        sim.at(when, lambda i=index: sim.reboot(i))  # type: ignore[misc]
    return max(back)


def _crash_all(sim: Simulation) -> None:
    for host in sim.hosts:
        sim.crash(host.index)


def _restart_dead(sim: Simulation) -> None:
    """Restart every host that is down (crashed, fenced or shut down)."""
    for host in sim.hosts:
        if not host.alive:
            sim.reboot(host.index)  # hosts that are no longer members stay down


def _expect_restart(sim: Simulation, fault: str, crashed: int) -> None:
    """Arm the restart bound if the pool was whole and stays within tolerance."""
    hosts = len(sim.members)
    everyone = sim.members
    whole = sim.survivors() == everyone and len(sim.masters()) == 1 and not sim.vms_down()
    survivors = everyone - {crashed}
    if not whole or not survivors:
        return
    if sim.config.mode is Mode.CLUSTERED and not quorate(survivors, everyone, hosts):
        return
    sim.expect_restart(fault)
