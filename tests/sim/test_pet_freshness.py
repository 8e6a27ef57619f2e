"""A host pets its watchdogs only while every host it keeps saw it lately.

Found by the membership schedules (issue #13): an isolated host paused between
losing its peers and deciding kept petting until it noticed the silence itself
(T1 later), so the survivors committed while its VMs still ran. Each case
isolates a host (and in statefile mode takes its statefile too), then pauses
it at a range of delays; the checker must see no violation. The canary puts
back the old rule (pet while NORMAL, whatever the others see) and must be
caught.
"""

from __future__ import annotations

import pytest

from hacluster.core.host.reports import Reports
from hacluster.core.node import Mode
from hacluster.sim.cluster import SimConfig, Simulation
from hacluster.sim.storage import IOFault
from hacluster.sim.trace import Trace

DELAYS = [0.8 * k for k in range(8)]  # seconds after the isolation, at T = 5


def isolated_then_paused(mode: Mode, delay: float) -> list[str]:
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


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_an_isolated_host_paused_before_it_decides_is_dead_at_the_commit(mode: Mode) -> None:
    for delay in DELAYS:
        assert isolated_then_paused(mode, delay) == [], f"paused {delay:.1f} s after"


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_canary_petting_whatever_the_others_see_is_caught(
        mode: Mode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Reports, "_seen_lately", lambda self: True)
    caught = [d for d in DELAYS if any("fence-before-commit" in v
                                       for v in isolated_then_paused(mode, d))]
    assert caught, "no delay showed the unsafe commit"
