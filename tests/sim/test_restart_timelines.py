"""Named restart timelines: what the master's restart executor does in a simulated pool.

Every run is seeded; a failure prints the seed, the violations and the trace.
"""

from __future__ import annotations

import pytest

from hacluster.core.pool import Priority
from hacluster.core.restarts import Restarter
from hacluster.core.timing import Timing
from hacluster.sim.checker import order_group_delays, restart_bound
from hacluster.sim.cluster import SimConfig, Simulation, default_pool
from hacluster.sim.timelines import (
    PAUSE,
    TIMELINES,
    TimelineResult,
    pool_of,
    run_timeline,
    workload,
)

SEEDS = [1, 2]
TIMEOUTS = [3.0, 5.0]


def run(name: str, seed: int, timeout: float) -> TimelineResult:
    result = run_timeline(TIMELINES[name], seed=seed, timeout=timeout)
    assert not result.sim.checker.violations, result.explain()
    return result


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_order_groups_start_in_turn_after_the_start_delay(seed: int, timeout: float) -> None:
    result = run("ordered-restart", seed, timeout)
    dhcp_started = result.first("starting", "dhcp")
    dhcp_running = result.first("running", "dhcp")
    sql_started = result.first("starting", "sql")
    assert dhcp_started < sql_started, result.explain()
    # 2 s of the master's clock, whose rate may differ from true time by the skew
    assert sql_started - dhcp_running >= 2.0 * (1 - result.sim.config.skew), result.explain()
    survivors = {0, 1}
    assert {e.host for e in result.events("running")} <= survivors


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_best_effort_after_every_protected_vm_and_unprotected_stay_down(
    seed: int, timeout: float
) -> None:
    result = run("ordered-restart", seed, timeout)
    protected_up = max(result.first("running", vm) for vm in ("dhcp", "sql"))
    assert result.first("starting", "batch") >= protected_up, result.explain()
    assert result.first("running", "batch")
    assert not result.events("starting", "scratch"), result.explain()
    assert result.alerts("ha_host_failed") == ["host-2"]
    assert not result.sim.vms_down()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_guest_shutdown_restarts_only_protected_vms(seed: int, timeout: float) -> None:
    result = run("guest-exits", seed, timeout)
    assert result.first("running", "guarded")  # protected: shut down inside, restarted
    assert result.first("running", "crashy")  # best-effort crash: restarted
    assert not result.events("starting", "casual"), result.explain()  # best-effort shutdown
    assert not result.events("starting", "plain"), result.explain()  # unprotected


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_overcommitted_pool_alerts_and_restarts_what_fits_by_order(
    seed: int, timeout: float
) -> None:
    result = run("overcommitted", seed, timeout)
    assert result.alerts("ha_protected_vm_restart_failed") == ["z"], result.explain()
    assert result.first("running", "x") <= result.first("starting", "y")
    assert not result.events("starting", "z")
    assert result.sim.vms_down() == ["z"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_paused_restarts_start_nothing_until_the_pause_ends(seed: int, timeout: float) -> None:
    result = run("restarts-paused", seed, timeout)
    pause_end = result.fault_at + PAUSE * timeout
    commit = min(e.time for e in result.sim.trace.of_kind("COMMIT")
                 if "removed [2]" in e.text)
    assert commit < pause_end  # the pause, not detection, held the restarts back
    starts = result.events("starting")
    assert starts and min(e.time for e in starts) >= pause_end, result.explain()
    assert not result.sim.vms_down(), result.explain()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_failures_beyond_tolerance_alert_once(seed: int, timeout: float) -> None:
    result = run("beyond-tolerance", seed, timeout)
    assert result.alerts("ha_failures_exceed_tolerance") == ["pool"], result.explain()
    assert sorted(result.alerts("ha_host_failed")) == ["host-1", "host-2"]
    assert not result.sim.vms_down()  # they fit on the survivor: the bounded tries suffice


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_new_master_restarts_the_old_masters_vms(seed: int, timeout: float) -> None:
    result = run("master-crash", seed, timeout)
    assert result.sim.masters() == {1}
    restarted = {e.vm: e.by for e in result.events("starting")}
    assert restarted == {"vm-0": 1, "vm-1": 1}, result.explain()
    assert [by for _, by, a in result.sim.alerts if a.name == "ha_host_failed"] == [1]
    assert not result.sim.vms_down()


def test_restart_bound_grows_with_order_groups_and_their_delays() -> None:
    pool = pool_of(3, 8192, [workload("a", 0, start_delay=2.0), workload("b", 0, start_delay=1.0),
                             workload("c", 1, order=1, start_delay=0.5),
                             workload("d", 1, order=4, start_delay=9.0),
                             workload("e", 2, order=7, start_delay=50.0,
                                      priority=Priority.BEST_EFFORT)])
    timing = Timing.derive(5.0)
    assert order_group_delays(pool) == [2.0, 0.5, 9.0]
    base = restart_bound(timing)
    assert restart_bound(timing, order_group_delays(pool), boot=0.3) == pytest.approx(
        base + 3 * (0.3 + timing.t1) + 2.0 + 0.5)


def test_simulated_pool_must_have_one_host_per_simulated_host() -> None:
    with pytest.raises(ValueError, match="the pool has 3 hosts"):
        Simulation(SimConfig(hosts=4, seed=1, pool=default_pool(3, 1)))


def test_default_pool_runs_protected_vms_on_every_host_with_room_for_all() -> None:
    sim = Simulation(SimConfig(hosts=3, seed=1, vms_per_host=2))
    assert [sorted(h.vms) for h in sim.hosts] == [["vm-0", "vm-1"], ["vm-2", "vm-3"],
                                                  ["vm-4", "vm-5"]]
    assert all(sim.free_memory(i) >= 4 * 1024 for i in range(3))
    assert sim.pool_db.host_failures_to_tolerate == 2


# ----------------------------------------------------------- canaries
def test_canary_ignoring_order_groups_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Restarter, "_gate_open", lambda self, order, now: True)
    result = run_timeline(TIMELINES["ordered-restart"], seed=1, timeout=3.0)
    assert result.first("starting", "sql") <= result.first("running", "dhcp")


def test_canary_master_that_restarts_nothing_breaks_the_restart_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Restarter, "_restart", lambda self, now, out: None)
    result = run_timeline(TIMELINES["master-crash"], seed=1, timeout=3.0)
    assert {v.prop for v in result.sim.checker.violations} == {"restart-bound"}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_a_start_whose_answer_is_lost_waits_for_the_host(seed: int, timeout: float) -> None:
    result = run("start-to-paused-host", seed, timeout)
    unsure = {e.vm for e in result.events("unsure")}
    assert unsure == {"vm-4", "vm-5"}, result.explain()
    # host 1 served the starts as it resumed; nobody started them anywhere else
    assert {(e.vm, e.host) for e in result.events("starting")} == {("vm-4", 1), ("vm-5", 1)}
    assert {(e.vm, e.host) for e in result.events("running")} == {("vm-4", 1), ("vm-5", 1)}
    assert not result.sim.vms_down()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_a_host_silent_at_the_take_over_keeps_its_vms(seed: int, timeout: float) -> None:
    result = run("takeover-with-silent-host", seed, timeout)
    removed = [e for e in result.sim.trace.of_kind("COMMIT")
               if "removed [1]" in e.text or "removed [2]" in e.text]
    assert removed, result.explain()  # the pool removed one end of the cut link
    # host 2's VMs moved only once one end of the link was gone
    moved = [e for e in result.events("starting") if e.vm in ("vm-4", "vm-5")]
    assert all(e.time >= removed[0].time for e in moved), result.explain()
    assert not result.sim.vms_down(), result.explain()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_a_new_master_keeps_what_the_operator_halted_or_suspended_down(
        seed: int, timeout: float) -> None:
    result = run("operator-stops-then-master-crash", seed, timeout)
    assert result.first("running", "web") and result.first("running", "app")
    for vm in ("kept", "parked"):  # their host died too: a stale record would restart them
        assert not result.events("starting", vm), result.explain()
    pool = result.sim.master.pool_db
    assert pool.vm("parked").power.value == "suspended", result.explain()
