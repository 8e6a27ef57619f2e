"""Named restart timelines: pools with order groups, mixed priorities and tight
memory, and the faults that exercise the master's restart executor (spec section 9).

Rules: a timeline is a pool (host ``i`` is ``pool.hosts[i]``) and faults given
in units of T after a warm-up of ``WARMUP`` T, run for ``duration`` T under the
checker. What happened to each VM is read from the run's VM log
(:attr:`Simulation.vm_log`) and its alerts; a failed expectation is explained
with the seed, the violations and the trace (:meth:`TimelineResult.explain`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hacluster.core.messages import Phase
from hacluster.core.pool import VM, Host, Pool, Power, Priority
from hacluster.sim.cluster import SimConfig, Simulation, VMEvent, default_pool
from hacluster.sim.scenarios import Schedule, play
from hacluster.sim.trace import Trace

RESTART, BEST_EFFORT, NONE = Priority.RESTART, Priority.BEST_EFFORT, Priority.NONE


def workload(name: str, on: int, memory: int = 1024, priority: Priority = RESTART,
             order: int = 0, start_delay: float = 0.0) -> VM:
    """A VM running on host ``on`` (index) of a pool built by :func:`pool_of`."""
    return VM(name, name, memory, priority, order, start_delay, Power.RUNNING, f"host-{on}")


def pool_of(hosts: int, memory: int, vms: list[VM], tolerate: int = 1) -> Pool:
    members = tuple(Host(f"host-{i}", f"h{i}", memory) for i in range(hosts))
    return Pool(members, tuple(vms), host_failures_to_tolerate=tolerate)


@dataclass(frozen=True)
class Timeline:
    name: str
    summary: str
    pool: Pool
    inject: Callable[[Simulation, Schedule], None]
    duration: float = 6.0
    restart: bool = False  # arm the restart bound for every protected VM at the fault


@dataclass
class TimelineResult:
    timeline: Timeline
    sim: Simulation
    seed: int
    fault_at: float

    def events(self, what: str, vm: str | None = None) -> list[VMEvent]:
        """VM events of kind ``what`` (of ``vm``, if given) since the fault."""
        return [e for e in self.sim.vm_log if e.what == what and e.time >= self.fault_at
                and (vm is None or e.vm == vm)]

    def first(self, what: str, vm: str) -> float:
        found = self.events(what, vm)
        assert found, f"{vm} never {what} after the fault\n{self.explain()}"
        return found[0].time

    def alerts(self, name: str) -> list[str]:
        """The objects of the alerts called ``name`` raised since the fault."""
        return [a.obj for t, _, a in self.sim.alerts if a.name == name and t >= self.fault_at]

    def explain(self) -> str:
        violations = [v.line() for v in self.sim.checker.violations]
        return "\n".join([f"timeline {self.timeline.name} seed={self.seed} "
                          f"T={self.sim.timing.T}", *violations, *self.sim.trace.lines()])


def run_timeline(timeline: Timeline, seed: int = 1, timeout: float = 5.0) -> TimelineResult:
    config = SimConfig(hosts=len(timeline.pool.hosts), seed=seed, timeout=timeout,
                       pool=timeline.pool)
    sim = Simulation(config, trace=Trace())
    fault_at, _ = play(sim, timeline.name, timeline.inject, timeline.restart, timeline.duration)
    return TimelineResult(timeline, sim, seed, fault_at)


def _crash(*hosts: int) -> Callable[[Simulation, Schedule], None]:
    def inject(sim: Simulation, at: Schedule) -> None:
        for h in hosts:
            at(0, lambda h=h: sim.crash(h))  # type: ignore[misc]
    return inject


def _guest_exits(sim: Simulation, at: Schedule) -> None:
    at(0, lambda: sim.vm_exit("guarded", internal_shutdown=True))
    at(0, lambda: sim.vm_exit("casual", internal_shutdown=True))
    at(0, lambda: sim.vm_exit("plain", internal_shutdown=True))
    at(0, lambda: sim.vm_exit("crashy", internal_shutdown=False))


PAUSE = 4.0  # T: restarts paused from the crash on, longer than detection and commit


def _paused_crash(sim: Simulation, at: Schedule) -> None:
    at(0, lambda: sim.pause_restarts(PAUSE * sim.timing.T))
    at(0, lambda: sim.crash(2))


def _operator_stops_then_crashes(sim: Simulation, at: Schedule) -> None:
    at(0, lambda: sim.operator_stop("kept", Power.HALTED))
    at(0, lambda: sim.operator_stop("parked", Power.SUSPENDED))
    at(0.5, lambda: sim.crash(0))
    at(0.5, lambda: sim.crash(1))


def _in(sim: Simulation, host: int, *phases: Phase) -> Callable[[], bool]:
    """Whether ``host`` is in one of ``phases``."""
    return lambda: (core := sim.hosts[host].core) is not None and core.phase in phases


def _start_to_paused_host(sim: Simulation, at: Schedule) -> None:
    """Host 2 crashes; host 1, where its VMs fit best, is paused once the master
    holds its answer in the fault handler (the master decides, commits and starts
    the VMs while it is paused: the starts wait in its socket) for less than its
    stall limit, so it stays a member."""
    def master_holds_answer() -> bool:
        core = sim.hosts[0].core
        seen = None if core is None else core.peers[1].report
        return seen is not None and seen.phase in (Phase.AGREEING, Phase.PROPOSED)

    at(0, lambda: sim.crash(2))
    at(0, lambda: sim.when(master_holds_answer, lambda: sim.pause(1, 0.4 * sim.timing.T)))


def _takeover_with_silent_host(sim: Simulation, at: Schedule) -> None:
    """The master (host 0) crashes; once host 1 (the next master) handles it, the
    link between host 1 and host 2 is cut (which nobody notices for T1): host 2
    cannot answer the new master's first survey."""
    at(0, lambda: sim.crash(0))
    at(0, lambda: sim.when(_in(sim, 1, Phase.STABILIZING, Phase.AGREEING, Phase.PROPOSED),
                           lambda: sim.cut_link(1, 2)))


def _tight_pool() -> Pool:
    """Host 0 full, host 1 with room for two more VMs (the tightest fit), host 3 roomy."""
    pool = default_pool(4, 2)
    h = pool.hosts
    return replace(pool, hosts=(replace(h[0], memory_total=2048),
                                replace(h[1], memory_total=4096), h[2],
                                replace(h[3], memory_total=16384)))


TIMELINES: dict[str, Timeline] = {t.name: t for t in [
    Timeline("ordered-restart",
             "host 2 runs dhcp (order 0, start-delay 2 s), sql (order 1), a best-effort "
             "and an unprotected VM, and crashes",
             pool_of(3, 8192, [workload("infra", 0), workload("app", 1, order=1),
                               workload("dhcp", 2, start_delay=2.0),
                               workload("sql", 2, order=1),
                               workload("batch", 2, priority=BEST_EFFORT),
                               workload("scratch", 2, priority=NONE)]),
             _crash(2), restart=True),
    Timeline("guest-exits",
             "VMs of host 1 stop by themselves: a protected and a best-effort one shut down "
             "from inside, an unprotected one too, a best-effort one crashes",
             pool_of(3, 8192, [workload("guarded", 1, order=1),
                               workload("casual", 1, priority=BEST_EFFORT),
                               workload("plain", 1, priority=NONE),
                               workload("crashy", 1, priority=BEST_EFFORT)]),
             _guest_exits, duration=3.0),
    Timeline("overcommitted",
             "host 2 crashes; the survivors have room for two of its three protected VMs",
             pool_of(3, 4096, [workload("big-0", 0, 3072), workload("big-1", 1, 3072),
                               workload("x", 2), workload("y", 2, order=1),
                               workload("z", 2, order=2)]),
             _crash(2)),
    Timeline("restarts-paused",
             "restarts are paused for 4T when host 2 crashes",
             default_pool(3, 2), _paused_crash, duration=7.0),
    Timeline("beyond-tolerance",
             "hosts 1 and 2 crash at once in a pool that tolerates one failure",
             replace(default_pool(3, 2), host_failures_to_tolerate=1), _crash(1, 2)),
    Timeline("master-crash",
             "the master crashes; the new master restarts its VMs",
             default_pool(3, 2), _crash(0), restart=True),
    Timeline("start-to-paused-host",
             "host 2 crashes; its VMs are started on host 1 while host 1's daemon is "
             "paused: the outcome is unknown until host 1 answers, and nothing starts twice",
             _tight_pool(), _start_to_paused_host),
    Timeline("operator-stops-then-master-crash",
             "the operator halts a best-effort VM and suspends a protected one on host 1; "
             "then the master (host 0) and host 1 crash: the new master restarts only the "
             "VMs that were running",
             pool_of(4, 8192, [workload("web", 0), workload("kept", 1, priority=BEST_EFFORT),
                               workload("parked", 1), workload("app", 1, order=1)],
                     tolerate=2),
             _operator_stops_then_crashes),
    Timeline("takeover-with-silent-host",
             "the master crashes; host 2 cannot answer the new master as it takes over: "
             "its VMs stay where they are until the pool removes one end of the cut link",
             default_pool(4, 2), _takeover_with_silent_host, duration=8.0),
]}
