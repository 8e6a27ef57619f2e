"""A host's watchdog lease runs out a lease after the last sighting that every
possible survivor shares (issue #14), whatever the host has noticed.

Found by the membership schedules (issue #13), in the days of pet freshness:
an isolated host paused between losing its peers and deciding kept petting
until it noticed the silence itself (T1 later), so the survivors committed
while its VMs still ran. Each case cuts a host (or a minority) off, then
pauses it at a range of delays; the checker must see no violation. Each
canary breaks one rule of the lease and must be caught: a lease renewed
whatever the others see, and one renewed by a single host in clustered mode
(a watchdog that fires later than its lease: tests/sim/test_canaries.py).
"""

from __future__ import annotations

import pytest

from hacluster.core.host.reports import Reports
from hacluster.core.node import Mode
from hacluster.sim.cluster import SimConfig, Simulation
from hacluster.sim.storage import IOFault
from hacluster.sim.trace import Trace

DELAYS = [0.8 * k for k in range(8)]  # seconds after the cut, at T = 5


def isolated_then_paused(mode: Mode, delay: float) -> list[str]:
    """One host loses the network (and in statefile mode the SR), then pauses."""
    hosts = 4 if mode is Mode.CLUSTERED else 3
    victim = hosts - 1
    sim = Simulation(SimConfig(hosts=hosts, seed=3, timeout=5.0, mode=mode), trace=Trace())
    sim.at(10.0, lambda: sim.isolate(victim))
    if mode is Mode.STATEFILE:
        sim.at(10.0, lambda: sim.storage_fault(victim, IOFault.ERROR))
    sim.at(10.0 + delay, lambda: sim.pause(victim, 3 * sim.timing.T))
    sim.run_until(60.0)
    assert victim in sim.fenced() or not sim.hosts[victim].vms
    return [v.line() for v in sim.checker.violations]


def minority_then_paused(delay: float) -> list[str]:
    """Clustered mode, 5 hosts split 3|2: one host of the two pauses."""
    sim = Simulation(SimConfig(hosts=5, seed=3, timeout=5.0, mode=Mode.CLUSTERED),
                     trace=Trace())
    sim.at(10.0, lambda: sim.partition([(0, 1, 2), (3, 4)]))
    sim.at(10.0 + delay, lambda: sim.pause(4, 3 * sim.timing.T))
    sim.run_until(60.0)
    assert sim.survivors() == {0, 1, 2}
    return [v.line() for v in sim.checker.violations]


def unsafe(violations: list[str]) -> bool:
    return any("fence-before-commit" in v or "single-run" in v for v in violations)


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_an_isolated_host_paused_before_it_decides_is_dead_at_the_commit(mode: Mode) -> None:
    for delay in DELAYS:
        assert isolated_then_paused(mode, delay) == [], f"paused {delay:.1f} s after"


def test_a_paused_host_of_a_minority_is_dead_at_the_commit() -> None:
    for delay in DELAYS:
        assert minority_then_paused(delay) == [], f"paused {delay:.1f} s after"


@pytest.mark.usefixtures("blind_lease")
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_canary_a_lease_renewed_whatever_the_others_see_is_caught(mode: Mode) -> None:
    caught = [d for d in DELAYS if unsafe(isolated_then_paused(mode, d))]
    assert caught, "no delay showed the unsafe commit"


def test_canary_a_clustered_lease_renewed_by_one_host_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Reports, "_quorum_base",
                        lambda self, seen: seen[0][0] if seen else self.now)
    caught = [d for d in DELAYS if unsafe(minority_then_paused(d))]
    assert caught, "no delay showed the unsafe commit"
