"""Mutation canaries: break the core on purpose; the checker must notice.

Each canary patches one rule of the core for the duration of a test only (the
product has no switch for any of this), runs a run that exercises the rule,
and asserts that the checker reports a violation. A control run with the core
intact passes, so the violation comes from the mutation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from hacluster.core import survival
from hacluster.core.messages import HostSet
from hacluster.core.node import Mode
from hacluster.core.timing import Timing
from hacluster.sim.cluster import SimConfig, Simulation
from hacluster.sim.scenarios import SCENARIOS, run_scenario
from hacluster.sim.schedules import run_schedule
from hacluster.sim.storage import IOFault
from hacluster.sim.trace import Trace


def props(violations: list[str]) -> set[str]:
    return {v.split()[1] for v in violations}


@pytest.fixture
def no_fence_window(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(Timing, "minimum_fence_window", lambda self: 0.001)
    assert Timing.derive(5.0).fence_window == 0.001
    yield


@pytest.fixture
def inverted_tie_break(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(survival, "partition_rank", lambda side: (-len(side), -min(side)))
    yield


@pytest.fixture
def unconditional_rule_2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def applies(me: int, liveset: HostSet, views: Mapping[int, survival.View]) -> bool:
        return not views[me].statefile_access

    monkeypatch.setattr(survival, "rule2_applies", applies)
    yield


# ----------------------------------------------------------- fence window
@pytest.mark.usefixtures("no_fence_window")
def test_without_fence_window_a_paused_host_runs_beside_its_restarted_vms() -> None:
    result = run_scenario(SCENARIOS["pause-longer-than-T"], trace=Trace())
    assert {"fence-before-commit", "single-run"} <= props(result.violations)


@pytest.mark.usefixtures("no_fence_window")
def test_without_fence_window_random_schedules_find_violations() -> None:
    found = [r for r in (run_schedule(4, seed) for seed in range(40)) if not r.ok]
    assert found, "40 random schedules never caught the missing fence window"
    print(found[0].report())


# ----------------------------------------------------------- tie-break
@pytest.mark.parametrize("name", ["two-host-split", "partition-2-2-1"])
def test_inverted_tie_break_changes_the_predicted_outcome(
    name: str, inverted_tie_break: None
) -> None:
    result = run_scenario(SCENARIOS[name], trace=Trace())
    assert "outcome" in props(result.violations)


# ----------------------------------------------------------- survival rule 2
def _lost_everything(host: int) -> Simulation:
    """Host ``host`` loses both the network and the statefile; the rest keep both."""
    sim = Simulation(SimConfig(hosts=3, seed=5, timeout=5.0), trace=Trace())
    sim.at(10.0, lambda: sim.isolate(host))
    sim.at(10.0, lambda: sim.storage_fault(host, IOFault.ERROR))
    sim.run_until(40.0)
    return sim


def test_control_host_that_lost_everything_fences() -> None:
    sim = _lost_everything(2)
    assert not sim.checker.violations
    assert sim.fenced() == {2} and sim.survivors() == {0, 1}


@pytest.mark.usefixtures("unconditional_rule_2")
def test_rule_2_without_its_conditions_lets_a_lost_host_run_on() -> None:
    sim = _lost_everything(2)
    found = {v.prop for v in sim.checker.violations}
    assert {"fence-before-commit", "single-run"} & found, found


def test_canaries_leave_the_core_intact_afterwards() -> None:
    assert Timing.derive(5.0).fence_window > 1
    assert survival.partition_rank(frozenset({0, 1})) < survival.partition_rank(
        frozenset({2, 3})
    )
    result = run_scenario(SCENARIOS["two-host-split"], trace=Trace())
    assert result.ok
    assert Mode.STATEFILE.value == "statefile"
