"""Joins and ejects in the simulator: named scenarios, random schedules, a canary."""

from __future__ import annotations

import pytest

from hacluster.core.host.membership import Membership
from hacluster.core.messages import EMPTY
from hacluster.core.node import Mode
from hacluster.sim.scenarios import SCENARIOS, run_scenario
from hacluster.sim.schedules import run_schedule
from hacluster.sim.trace import Trace


def test_a_new_host_joins_every_liveset() -> None:
    result = run_scenario(SCENARIOS["join-new-host"], trace=Trace())
    assert result.ok, result.violations
    sim = result.sim
    everyone = frozenset({0, 1, 2, 3})
    assert all(h.core is not None and h.core.liveset == everyone for h in sim.hosts)
    assert len(sim.masters()) == 1
    assert not sim.vms_down(), "the VMs placed on the free index run on the members"


def test_an_ejected_host_leaves_at_once_and_a_new_one_takes_its_index() -> None:
    result = run_scenario(SCENARIOS["eject-then-join"], trace=Trace())
    assert result.ok, result.violations
    assert result.commit_at is not None
    assert result.commit_at - result.fault_at < 1.0, "a clean leave needs no fence window"
    assert result.sim.hosts[2].boot == 2 and result.sim.hosts[2].core is not None
    assert not result.sim.fenced()


def test_an_ejected_host_that_did_not_leave_is_removed_only_after_the_fence_window() -> None:
    result = run_scenario(SCENARIOS["eject-paused-host"], trace=Trace())
    assert result.ok, result.violations
    assert result.commit_at is not None
    assert result.commit_at - result.fault_at >= result.sim.timing.fence_window


def eager_eject(self: Membership) -> None:
    """The canary: the member table's word removes a host from my liveset at once."""
    gone = (self.liveset or EMPTY) - self._wanted
    if gone and self.liveset is not None and self.armed:
        self._commit(self.liveset - gone, gone, EMPTY)
    self.members = self._wanted


def test_canary_an_eject_that_removes_a_live_host_at_once_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run_scenario(SCENARIOS["eject-paused-host"], trace=Trace()).ok, "control"
    monkeypatch.setattr(Membership, "_settle_members", eager_eject)
    result = run_scenario(SCENARIOS["eject-paused-host"], trace=Trace())
    found = {v.split()[1] for v in result.violations}
    assert {"fence-before-commit", "single-run"} & found, result.violations


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_random_schedules_with_joins_and_ejects_keep_every_property(mode: Mode) -> None:
    """Seeds whose schedules eject and join (a fourth random stream draws them)."""
    runs = [run_schedule(hosts, seed, mode) for hosts in (3, 5) for seed in range(12)]
    with_members = [r for r in runs if any(f.startswith("eject") for f in r.faults)]
    assert len(with_members) >= 6, [r.faults for r in runs]
    for result in runs:
        assert result.ok, result.report()
