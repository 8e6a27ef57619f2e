"""Named fault scenarios with the outcome the spec predicts for each.

Rules: every scenario starts from a healthy armed pool, injects its faults at
times given in units of T after a warm-up, runs for ``duration`` T, then checks
the survivors, the fenced hosts and the master count, and, where the scenario
removes hosts, that the removal is committed (and VMs run again) within the
bound derived from T; a scenario whose fenced hosts come back must end settled
(the checker's settle property). All checks go through the run's checker, so a failed
expectation is reported as a violation with the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hacluster.core.node import Mode
from hacluster.sim.checker import restart_bound
from hacluster.sim.cluster import SimConfig, Simulation
from hacluster.sim.storage import IOFault
from hacluster.sim.trace import Trace

WARMUP = 2.0  # in units of T: the pool settles and elects a master first


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    hosts: int
    inject: Callable[[Simulation, Callable[[float, Callable[[], None]], None]], None]
    survivors: frozenset[int]
    fenced: frozenset[int]
    masters: int = 1
    mode: Mode = Mode.STATEFILE
    duration: float = 6.0
    restart: bool = True  # VMs of removed hosts must run again within the bound
    reboot_after: float | None = None
    cold_start: bool = False
    settles: bool = False  # the pool must end settled: every host back, one master
    members: frozenset[int] | None = None  # the pool's hosts at start (None: all)
    removals: bool = True  # False: no commit after the fault may remove a host


@dataclass
class ScenarioResult:
    scenario: Scenario
    sim: Simulation
    fault_at: float
    commit_at: float | None
    bound: float
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


Schedule = Callable[[float, Callable[[], None]], None]


def _hosts(*ids: int) -> frozenset[int]:
    return frozenset(ids)


def _crash(host: int) -> Callable[[Simulation, Schedule], None]:
    return lambda sim, at: at(0, lambda: sim.crash(host))


def _partition(*groups: tuple[int, ...]) -> Callable[[Simulation, Schedule], None]:
    return lambda sim, at: at(0, lambda: sim.partition(groups))


def _isolate(host: int) -> Callable[[Simulation, Schedule], None]:
    return lambda sim, at: at(0, lambda: sim.isolate(host))


def _storage(hosts: tuple[int, ...], fault: IOFault) -> Callable[[Simulation, Schedule], None]:
    def inject(sim: Simulation, at: Schedule) -> None:
        for h in hosts:
            at(0, lambda h=h: sim.storage_fault(h, fault))  # type: ignore[misc]
    return inject


def _statefile_lost_everywhere(sim: Simulation, at: Schedule) -> None:
    at(0, lambda: sim.storage_fault_all(IOFault.ERROR))
    at(3.0, lambda: sim.crash(1))


def _pause(sim: Simulation, at: Schedule) -> None:
    at(0, lambda: sim.pause(2, 3 * sim.timing.T))


def _corrupt(sim: Simulation, at: Schedule) -> None:
    at(0, lambda: sim.corrupt_slot(1))
    at(0.4, lambda: sim.corrupt_slot(1, corrupted=False))


def _flapping(sim: Simulation, at: Schedule) -> None:
    for k in range(3):
        at(1.7 * k, lambda: sim.cut_link(1, 2))
        at(1.7 * k + 1.2, sim.heal_network)


def _split_from_boot(*groups: tuple[int, ...]) -> Callable[[Simulation, Schedule], None]:
    """Partition the pool before it even forms; heal after 3T."""
    def inject(sim: Simulation, at: Schedule) -> None:
        at(-WARMUP, lambda: sim.partition(groups))
        at(3.0, sim.heal_network)
    return inject


def _restart_right_after_heal(sim: Simulation, at: Schedule) -> None:
    """Partition 1,2,3 | 0,4: hosts 0 and 4 fence. Host 1 reads their last words
    from the SR and commits at once; hosts 2 and 3 cannot read the SR then (the
    partition drops the last words sent on the network). The network heals and
    0 and 4 restart right away, so 2 and 3 hear only the new boots, and host 1,
    having removed 0 and 4, sees the new boots alive."""
    at(0, lambda: sim.partition([(1, 2, 3), (0, 4)]))
    for h in (2, 3):
        at(1.15, lambda h=h: sim.storage_fault(h, IOFault.READ_ERROR))  # type: ignore[misc]
        at(2.05, lambda h=h: sim.storage_fault(h, IOFault.OK))  # type: ignore[misc]
    at(1.9, sim.heal_network)
    for h in (0, 4):
        at(1.95, lambda h=h: sim.reboot(h))  # type: ignore[misc]


def _after_rejoin(fault: Callable[[Simulation], None]) -> Callable[[Simulation, Schedule], None]:
    """Host 2 is cut off and fences (its last words stay in its slot), restarts
    and rejoins; then ``fault`` strikes its second boot."""
    def inject(sim: Simulation, at: Schedule) -> None:
        at(0, lambda: sim.isolate(2))
        at(2.0, sim.heal_network)
        at(2.5, lambda: sim.reboot(2))
        at(5.0, lambda: fault(sim))
    return inject


# its daemon stops for 3T with its VMs running
_pause_after_rejoin = _after_rejoin(lambda sim: sim.pause(2, 3 * sim.timing.T))
# it loses the statefile while the network still carries it
_statefile_lost_after_rejoin = _after_rejoin(lambda sim: sim.storage_fault(2, IOFault.ERROR))


def _eject_then_join(sim: Simulation, at: Schedule) -> None:
    """Host 2 is ejected (it leaves cleanly), then a new host joins on its index."""
    at(0, lambda: sim.eject(2))
    at(2.0, lambda: sim.join(2))


def _eject_paused(sim: Simulation, at: Schedule) -> None:
    """Host 2's daemon stops for 3T and is ejected meanwhile: the request to leave
    is lost, the member table drops it while every member still lists it."""
    at(0, lambda: sim.pause(2, 3 * sim.timing.T))
    at(0.1, lambda: sim.eject(2))


def _join_then_eject_master(sim: Simulation, at: Schedule) -> None:
    at(0, lambda: sim.join(3))
    at(3.0, lambda: sim.eject(0))


def _rejoin(sim: Simulation, at: Schedule) -> None:
    at(0, lambda: sim.isolate(2))
    at(2.0, sim.heal_network)


def _total_outage(reboots: dict[int, float]) -> Callable[[Simulation, Schedule], None]:
    """Every host crashes at once (a power cut); host ``h`` boots again at ``reboots[h]``."""
    def inject(sim: Simulation, at: Schedule) -> None:
        for h in range(sim.config.hosts):
            at(0, lambda h=h: sim.crash(h))  # type: ignore[misc]
        for h, offset in reboots.items():
            at(offset, lambda h=h: sim.reboot(h))  # type: ignore[misc]
    return inject


def _outage_right_after_a_join(sim: Simulation, at: Schedule) -> None:
    """Host 3 joins a 3-host pool; every host crashes the moment a member's slot
    lists 3 and still acks it (3 has not armed yet). Host 3 boots first and reads
    those slots before the others' next boots write theirs; they follow 0.5T later."""
    T = sim.timing.T

    def left_acking() -> bool:
        return any(3 in r.liveset and 3 in r.join_acks for r in sim.storage.slots.values())

    def power_cut() -> None:
        for h in range(4):
            sim.crash(h)
        sim.at(sim.t + 0.2 * T, lambda: sim.reboot(3))
        for h in range(3):
            sim.at(sim.t + 0.7 * T, lambda h=h: sim.reboot(h))  # type: ignore[misc]

    at(0, lambda: sim.join(3))
    at(0, lambda: sim.when(left_acking, power_cut))


def _stale_liveset(sim: Simulation, at: Schedule) -> None:
    """Host 2 crashes with no last words and stays down: its slot keeps liveset
    [0, 1, 2] at the epoch before hosts 0 and 1 removed it. Then 0 and 1 crash
    too and boot again: the newest liveset on the SR, [0, 1], re-forms."""
    at(0, lambda: sim.crash(2))
    for h in (0, 1):
        at(3.0, lambda h=h: sim.crash(h))  # type: ignore[misc]
    at(3.5, lambda: sim.reboot(0))
    at(4.5, lambda: sim.reboot(1))


def _stale_host_back_first(sim: Simulation, at: Schedule) -> None:
    """As :func:`_stale_liveset`, but 2 boots again with 0, before 1: 2's stale
    liveset names 0 and 2, the newest ([0, 1]) needs 1, so no pool forms until
    1 is back; then [0, 1] forms and 2 joins it."""
    at(0, lambda: sim.crash(2))
    for h in (0, 1):
        at(3.0, lambda h=h: sim.crash(h))  # type: ignore[misc]
    for h in (0, 2):
        at(3.5, lambda h=h: sim.reboot(h))  # type: ignore[misc]
    at(6.0, lambda: sim.reboot(1))


def _lone_rule2_survivor(sim: Simulation, at: Schedule) -> None:
    """Hosts 0 and 1 lose the statefile and the network to host 2: 2 wins alone
    (survival rule 1), 0 and 1 fence. 2's storage fails just before it commits
    [2], so its slot still shows [0, 1, 2]; alone without the statefile it lives
    on in survival-rule-2 mode. 0 and 1 reboot with the statefile back but still
    cut off from 2: the last liveset on the SR needs 2, which is not joining, so
    they wait (a quorum of it would form a second pool beside 2's VMs). The
    network heals, then 2's storage: 2 leaves rule 2 and admits them."""
    at(0, lambda: sim.partition([(0, 1), (2,)]))
    for h in (0, 1):
        at(0, lambda h=h: sim.storage_fault(h, IOFault.ERROR))  # type: ignore[misc]
        at(2.0, lambda h=h: sim.storage_fault(h, IOFault.OK))  # type: ignore[misc]
    at(1.5, lambda: sim.storage_fault(2, IOFault.ERROR))
    at(6.0, sim.heal_network)
    at(7.0, lambda: sim.storage_fault(2, IOFault.OK))


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("host-crash", "a non-master host crashes", 3, _crash(2),
             survivors=_hosts(0, 1), fenced=_hosts()),
    Scenario("master-crash", "the master crashes; the lowest survivor takes the lock", 3,
             _crash(0), survivors=_hosts(1, 2), fenced=_hosts()),
    Scenario("network-isolated-host", "one host loses the network but keeps the statefile",
             3, _isolate(2), survivors=_hosts(0, 1), fenced=_hosts(2)),
    Scenario("statefile-lost-host", "one host loses the statefile but keeps the network",
             3, _storage((2,), IOFault.ERROR), survivors=_hosts(0, 1), fenced=_hosts(2)),
    Scenario("statefile-lost-everywhere",
             "every host loses the statefile (survival rule 2), then a host crashes: all fence",
             3, _statefile_lost_everywhere, survivors=_hosts(), fenced=_hosts(0, 2), masters=0,
             restart=False, duration=7.0),
    Scenario("two-host-split", "a 2-host pool splits: the lowest index survives", 2,
             _partition((0,), (1,)), survivors=_hosts(0), fenced=_hosts(1)),
    Scenario("partition-3-2", "5 hosts split 2|3: the larger side survives", 5,
             _partition((0, 1), (2, 3, 4)), survivors=_hosts(2, 3, 4), fenced=_hosts(0, 1)),
    Scenario("partition-2-2-1", "5 hosts split 2|2|1: the pair with the lowest index survives",
             5, _partition((0, 1), (2, 3), (4,)), survivors=_hosts(0, 1),
             fenced=_hosts(2, 3, 4)),
    Scenario("one-way-link", "host 0 stops hearing host 2 (2 still hears 0)", 3,
             lambda sim, at: at(0, lambda: sim.drop_from(2, 0)),
             survivors=_hosts(0, 1), fenced=_hosts(2)),
    Scenario("pause-longer-than-T",
             "host 2's daemon stops for 3T: its watchdog fences it before the others commit",
             3, _pause, survivors=_hosts(0, 1), fenced=_hosts(2)),
    Scenario("storage-hang", "one host's storage hangs", 3, _storage((2,), IOFault.HANG),
             survivors=_hosts(0, 1), fenced=_hosts(2)),
    Scenario("corrupted-slot", "host 1's slot reads corrupted for 0.4T: nothing happens", 3,
             _corrupt, survivors=_hosts(0, 1, 2), fenced=_hosts(), restart=False),
    Scenario("flapping-link", "the link between hosts 1 and 2 flaps longer than T, three times",
             3, _flapping, survivors=_hosts(0, 1), fenced=_hosts(2), duration=8.0),
    Scenario("rejoin-after-fence", "an isolated host fences, reboots and rejoins when healed",
             3, _rejoin, survivors=_hosts(0, 1, 2), fenced=_hosts(), duration=8.0,
             reboot_after=5.0, settles=True),
    Scenario("pause-after-rejoin",
             "host 2 fences, rejoins, then stops for 3T: the survivors wait out its "
             "watchdog, its first boot's last words prove nothing of its second",
             3, _pause_after_rejoin, survivors=_hosts(0, 1), fenced=_hosts(2),
             restart=False, duration=10.0),
    Scenario("statefile-lost-after-rejoin",
             "host 2 fences, rejoins, then loses the statefile: it is seen on the network "
             "until it fences itself, and its first boot's last words prove nothing of its "
             "second", 3, _statefile_lost_after_rejoin, survivors=_hosts(0, 1),
             fenced=_hosts(2), restart=False, duration=10.0),
    Scenario("partition-restart-after-heal",
             "5 hosts split 3|2, the 2 fence and restart right after the heal; the "
             "survivors saw their last words at different times: all settle, none waits",
             5, _restart_right_after_heal, survivors=_hosts(0, 1, 2, 3, 4), fenced=_hosts(),
             restart=False, duration=8.0, settles=True),
    Scenario("join-new-host", "a 4th host joins a 3-host pool: all four in one liveset",
             4, lambda sim, at: at(0, lambda: sim.join(3)), survivors=_hosts(0, 1, 2, 3),
             fenced=_hosts(), restart=False, settles=True, members=_hosts(0, 1, 2)),
    Scenario("eject-then-join",
             "host 2 is ejected and leaves cleanly (its VMs restart on the others); a new "
             "host then joins on its index", 3, _eject_then_join,
             survivors=_hosts(0, 1, 2), fenced=_hosts(), settles=True),
    Scenario("eject-paused-host",
             "host 2 is ejected while its daemon is stopped for 3T: the members keep it "
             "until the fault handler removes it with the fence window", 3, _eject_paused,
             survivors=_hosts(0, 1), fenced=_hosts(2)),
    Scenario("clustered-join-eject",
             "clustered mode: a 4th host joins, then host 0 (the master) is ejected",
             4, _join_then_eject_master,
             survivors=_hosts(1, 2, 3), fenced=_hosts(), mode=Mode.CLUSTERED,
             members=_hosts(0, 1, 2), duration=8.0, restart=False, settles=True),
    Scenario("total-outage",
             "every host crashes at once and boots again: the last liveset on the SR "
             "re-forms the pool (cold start) and the master restarts every VM",
             3, _total_outage({0: 0.5, 1: 0.5, 2: 0.5}), survivors=_hosts(0, 1, 2),
             fenced=_hosts(), restart=False, settles=True, removals=False),
    Scenario("total-outage-one-stays-down",
             "every host crashes at once, host 2 stays down: no pool forms, hosts 0 and "
             "1 wait for it", 3, _total_outage({0: 0.5, 1: 0.5}), survivors=_hosts(),
             fenced=_hosts(), masters=0, restart=False),
    Scenario("total-outage-staggered",
             "every host of 4 crashes at once and they boot one by one, in another "
             "order: the pool forms when the last is back",
             4, _total_outage({3: 0.2, 1: 1.0, 0: 2.0, 2: 3.5}), survivors=_hosts(0, 1, 2, 3),
             fenced=_hosts(), restart=False, settles=True, removals=False, duration=8.0),
    Scenario("total-outage-right-after-a-join",
             "a 4th host joins; every host crashes while a member's last slot still acks "
             "it: the joined host's next boot is not admitted by that dead slot, and all "
             "four re-form the pool (cold start)",
             4, _outage_right_after_a_join, survivors=_hosts(0, 1, 2, 3), fenced=_hosts(),
             restart=False, settles=True, members=_hosts(0, 1, 2), duration=9.0,
             removals=False),
    Scenario("stale-liveset-on-the-sr",
             "host 2 crashes for good and is removed, then 0 and 1 crash and boot: the "
             "newest liveset on the SR, [0, 1], re-forms, not 2's stale [0, 1, 2]",
             3, _stale_liveset, survivors=_hosts(0, 1), fenced=_hosts(), duration=7.0),
    Scenario("stale-host-back-first",
             "as stale-liveset-on-the-sr, but 2 boots with 0, before 1: its stale liveset "
             "forms nothing; [0, 1] forms when 1 is back and 2 joins it",
             3, _stale_host_back_first, survivors=_hosts(0, 1, 2), fenced=_hosts(),
             duration=9.0, settles=True),
    Scenario("lone-rule2-survivor-blocks-cold-start",
             "a host that won alone lives on in survival-rule-2 mode; the fenced hosts "
             "come back cut off from it and must not cold-start beside it",
             3, _lone_rule2_survivor, survivors=_hosts(0, 1, 2), fenced=_hosts(),
             restart=False, reboot_after=1.5, duration=10.0, settles=True),
    Scenario("clustered-3-2", "clustered mode, 5 hosts split 2|3: the majority survives", 5,
             _partition((0, 1), (2, 3, 4)), survivors=_hosts(2, 3, 4), fenced=_hosts(0, 1),
             mode=Mode.CLUSTERED),
    Scenario("clustered-cold-start",
             "clustered mode, 5 hosts boot split 3|2: the 3 form the pool, the 2 join on heal",
             5, _split_from_boot((0, 1, 2), (3, 4)), survivors=_hosts(0, 1, 2, 3, 4),
             fenced=_hosts(), mode=Mode.CLUSTERED, restart=False, cold_start=True),
    Scenario("clustered-cold-start-no-quorum",
             "clustered mode, 4 hosts boot split 2|2: nobody forms a pool (needs 3)",
             4, lambda sim, at: at(-WARMUP, lambda: sim.partition([(0, 1), (2, 3)])),
             survivors=_hosts(), fenced=_hosts(), masters=0, mode=Mode.CLUSTERED,
             restart=False, cold_start=True),
    Scenario("clustered-2-2", "clustered mode, 4 hosts split 2|2: the half with host 0 survives",
             4, _partition((0, 1), (2, 3)), survivors=_hosts(0, 1), fenced=_hosts(2, 3),
             mode=Mode.CLUSTERED),
]}


def play(sim: Simulation, name: str, inject: Callable[[Simulation, Schedule], None],
         restart: bool, duration: float) -> tuple[float, float]:
    """Warm the pool up, inject the faults from ``WARMUP * T`` on (offsets in units
    of T), expect restarts within the bound if ``restart``, and run ``duration``
    more T. Returns the fault time and the end time."""
    T = sim.timing.T
    fault_at = WARMUP * T

    def at(offset: float, action: Callable[[], None]) -> None:
        sim.at(fault_at + offset * T, action)

    inject(sim, at)
    if restart:
        sim.expect_restart(name, start=fault_at)
    end = fault_at + duration * T
    sim.run_until(end)
    return fault_at, end


def run_scenario(
    scenario: Scenario, seed: int = 1, timeout: float = 5.0, trace: Trace | None = None
) -> ScenarioResult:
    """Run one named scenario and check its predicted outcome."""
    reboot = scenario.reboot_after * timeout if scenario.reboot_after is not None else None
    config = SimConfig(hosts=scenario.hosts, seed=seed, timeout=timeout, mode=scenario.mode,
                       reboot_after=reboot, cold_start=scenario.cold_start,
                       members=scenario.members)
    sim = Simulation(config, trace=trace if trace is not None else Trace(beats=True))
    fault_at, end = play(sim, scenario.name, scenario.inject, scenario.restart,
                         scenario.duration)
    check = sim.checker
    check.outcome(end, "survivors", sorted(scenario.survivors), sorted(sim.survivors()))
    check.outcome(end, "fenced hosts", sorted(scenario.fenced), sorted(sim.fenced()))
    check.outcome(end, "masters", scenario.masters, len(sim.masters()))
    if scenario.settles:
        check.settle_due(end, scenario.name, sim.unsettled())
    commits = [e.time for e in sim.trace.of_kind("COMMIT")
               if e.time >= fault_at and "removed" in e.text]
    if commits and not scenario.removals:
        check.violate(commits[0], "outcome", "a commit removed hosts, none should be")
    bound = restart_bound(sim.timing)
    commit_at = max(commits) if commits else None
    if scenario.restart and (commit_at is None or commit_at - fault_at > bound):
        check.violate(end, "outcome", f"liveset change not committed within {bound:.2f}s "
                      f"of the fault (last commit at {commit_at})")
    return ScenarioResult(scenario, sim, fault_at, commit_at, bound,
                          [v.line() for v in check.violations])
