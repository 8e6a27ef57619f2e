"""The master's restart executor (spec section 9), on small hand-built pools."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hacluster.core.pool import SR, VM, Host, Pool, PoolError, Power, Priority
from hacluster.core.restarts import (
    Alert,
    ForceHalt,
    HostsFailed,
    HostsLeft,
    Moved,
    Pass,
    PauseRestarts,
    Reconfigure,
    RestartAction,
    RestartConfig,
    Restarter,
    StartFinished,
    StartVM,
    Stopped,
    VMExited,
)

RESTART, BEST_EFFORT, NONE = Priority.RESTART, Priority.BEST_EFFORT, Priority.NONE
CONFIG = RestartConfig(retry_interval=5.0)


def host(name: str, memory: int = 4096) -> Host:
    return Host(name, name, memory)


def vm(name: str, memory: int = 1024, priority: Priority = RESTART, order: int = 0,
       delay: float = 0.0, on: str | None = None, disks: tuple[str, ...] = ()) -> VM:
    return VM(name, name, memory, priority, order, delay,
              Power.RUNNING if on else Power.HALTED, on, disks)


def make_pool(hosts: Iterable[Host], vms: Iterable[VM], nft: int = 1,
              reboot_on_internal_shutdown: bool = True, srs: Iterable[SR] = (),
              attempts: int = 3) -> Pool:
    return Pool(tuple(hosts), tuple(vms), tuple(srs), host_failures_to_tolerate=nft,
                reboot_vm_on_internal_shutdown=reboot_on_internal_shutdown,
                best_effort_attempts=attempts)


def three_hosts(*vms: VM, nft: int = 1, memory: int = 4096) -> Restarter:
    return Restarter(make_pool([host(h, memory) for h in ("h0", "h1", "h2")], vms, nft), CONFIG)


def starts(actions: list[RestartAction]) -> dict[str, str]:
    return {a.vm: a.host for a in actions if isinstance(a, StartVM)}


def alerts(actions: list[RestartAction], name: str | None = None) -> list[Alert]:
    return [a for a in actions if isinstance(a, Alert) and (name is None or a.name == name)]


def finish(r: Restarter, now: float, actions: list[RestartAction],
           ok: bool = True) -> list[RestartAction]:
    """Answer every start in ``actions``; return everything the answers caused."""
    out: list[RestartAction] = []
    for name, where in starts(actions).items():
        out += r.handle(StartFinished(now, name, where, ok))
    return out


ALL = frozenset({"h0", "h1", "h2"})


# ----------------------------------------------------------- host failure
def test_failed_host_is_marked_dead_alerted_and_its_vms_forced_halted() -> None:
    r = three_hosts(vm("a", on="h2"), vm("b", priority=NONE, on="h2"), vm("c", on="h0"))
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert [a.obj for a in alerts(out, "ha_host_failed")] == ["h2"]
    assert {a for a in out if isinstance(a, ForceHalt)} == {ForceHalt("a", "h2"),
                                                            ForceHalt("b", "h2")}
    assert "h2" not in r.live
    assert r.pool.vm("b").power is Power.HALTED and r.pool.vm("b").resident is None
    assert set(starts(out)) == {"a"}  # the unprotected VM is never restarted
    assert r.handle(HostsFailed(2.0, frozenset({"h2"}))) == []  # reported twice: once


def test_restarted_vm_runs_where_it_was_started() -> None:
    r = three_hosts(vm("a", on="h2"))
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    where = starts(out)["a"]
    assert r.starting == {"a": where}
    finish(r, 1.5, out)
    assert r.pool.vm("a").resident == where and r.pool.vm("a").running
    assert starts(r.handle(Pass(2.0, ALL - {"h2"}))) == {}


def test_unprotected_crash_stays_down() -> None:
    r = three_hosts(vm("u", priority=NONE, on="h0"))
    assert starts(r.handle(VMExited(1.0, "u", "h0", internal_shutdown=False))) == {}
    assert starts(r.handle(Pass(9.0, ALL))) == {}


# ----------------------------------------------------------- placement
def test_placement_is_best_fit_decreasing_over_live_enabled_hosts() -> None:
    hosts = [host("h0", 4096), host("h1", 2048), Host("h2", "h2", 8192, enabled=False),
             host("h3", 2048)]
    pool = make_pool(hosts, [vm("big", 2048, on="h3"), vm("small", 1024, on="h3")], nft=2)
    r = Restarter(pool, CONFIG)
    out = r.handle(HostsFailed(1.0, frozenset({"h3"})))
    # big fills h1 exactly; small goes to the tightest host left (h0); h2 is disabled
    assert starts(out) == {"big": "h1", "small": "h0"}


def test_starts_in_flight_hold_their_memory() -> None:
    r = three_hosts(vm("a", 3072, on="h2"), vm("c", 2048, on="h1"), nft=2)
    first = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert starts(first) == {"a": "h0"}  # h0 fits it most tightly (h1 has c)
    second = r.handle(VMExited(1.1, "c", "h1", internal_shutdown=False))
    assert starts(second) == {"c": "h1"}  # h0 has 1024 MiB left while a starts there


def test_failed_start_falls_back_to_another_host_then_waits_for_the_retry_interval() -> None:
    r = three_hosts(vm("a", on="h2"))
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    planned = starts(out)["a"]
    fallback = starts(finish(r, 1.2, out, ok=False))
    other = next(iter(ALL - {"h2", planned}))
    assert fallback == {"a": other}
    again = finish(r, 1.4, [StartVM("a", other)], ok=False)
    assert starts(again) == {}  # both hosts just failed it
    assert not alerts(again, "ha_protected_vm_restart_failed")  # it waits, it is not stuck
    assert starts(r.handle(Pass(6.1, ALL - {"h2"}))) == {}  # 4.9 s after the first failure
    assert starts(r.handle(Pass(6.2, ALL - {"h2"}))) == {"a": planned}


def test_non_agile_vm_stays_halted_when_its_host_died_and_restarts_on_its_own_host() -> None:
    local = SR("local2", "local storage of h2", shared=False, plugged=frozenset({"h2"}))
    local0 = SR("local0", "local storage of h0", shared=False, plugged=frozenset({"h0"}))
    pool = make_pool([host("h0"), host("h1"), host("h2")],
                     [vm("pinned", on="h2", disks=("local2",)),
                      vm("home", on="h0", disks=("local0",))], srs=[local, local0])
    r = Restarter(pool, CONFIG)
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert starts(out) == {}
    [alert] = alerts(out, "ha_protected_vm_restart_failed")
    assert alert.obj == "pinned" and "not agile" in alert.body and "local SR" in alert.body
    assert not alerts(r.handle(Pass(2.0, ALL - {"h2"})))  # once per episode
    crashed = r.handle(VMExited(3.0, "home", "h0", internal_shutdown=False))
    assert starts(crashed) == {"home": "h0"}


# ----------------------------------------------------------- order groups
def test_order_groups_start_in_turn_after_the_largest_start_delay() -> None:
    r = three_hosts(vm("a", order=0, delay=2.0, on="h2"), vm("b", order=0, delay=1.0, on="h2"),
                    vm("c", order=1, delay=0.5, on="h2"), vm("d", order=2, on="h2"),
                    memory=8192)
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert set(starts(out)) == {"a", "b"}  # group 0, in parallel
    live = ALL - {"h2"}
    assert starts(r.handle(StartFinished(1.5, "a", starts(out)["a"], ok=True))) == {}
    assert starts(r.handle(Pass(1.9, live))) == {}  # b still starting
    assert starts(r.handle(StartFinished(2.0, "b", starts(out)["b"], ok=True))) == {}
    assert starts(r.handle(Pass(3.99, live))) == {}  # the largest delay, 2 s, from 2.0
    group1 = r.handle(Pass(4.0, live))
    assert set(starts(group1)) == {"c"}
    assert starts(finish(r, 4.2, group1)) == {}
    assert starts(r.handle(Pass(4.69, live))) == {}
    assert set(starts(r.handle(Pass(4.7, live)))) == {"d"}


def test_reconfigure_takes_new_settings_and_keeps_what_runs_where() -> None:
    r = three_hosts(vm("a", order=0, delay=2.0, on="h2"), vm("c", order=1, on="h2"),
                    vm("u", priority=NONE, on="h1"), memory=8192)
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert set(starts(out)) == {"a"}
    # while a starts, the operator moves it to order 5 and protects u
    config = r.pool.with_vms([replace(r.pool.vm("a"), order=5, power=Power.HALTED,
                                      resident=None),
                              replace(r.pool.vm("u"), priority=RESTART, power=Power.HALTED,
                                      resident=None)])
    r.handle(Reconfigure(1.1, config))
    assert r.pool.vm("a").order == 5 and r.pool.vm("u").priority is RESTART
    assert r.pool.vm("u").resident == "h1"  # runtime state kept, not the config's
    # a's start finishes the group it was started in: c waits for a's delay, then runs
    assert starts(r.handle(StartFinished(1.5, "a", starts(out)["a"], ok=True))) == {}
    assert set(starts(r.handle(Pass(3.5, ALL - {"h2"})))) == {"c"}


def test_a_clean_shutdown_is_no_failure_but_protected_vms_come_back() -> None:
    r = three_hosts(vm("p", on="h2"), vm("b", priority=BEST_EFFORT, on="h2"))
    out = r.handle(HostsLeft(1.0, frozenset({"h2"})))
    assert alerts(out) == [] and not [a for a in out if isinstance(a, ForceHalt)]
    assert set(starts(out)) == {"p"}  # protected: level-sensitive; best-effort stays down
    assert "h2" not in r.live


def test_a_moved_vm_is_restarted_from_its_new_host() -> None:
    r = three_hosts(vm("a", on="h0"))
    r.handle(Moved(1.0, "a", "h1"))
    assert r.pool.vm("a").resident == "h1"
    assert starts(r.handle(HostsFailed(2.0, frozenset({"h0"})))) == {}  # not on h0 any more
    out = r.handle(HostsFailed(3.0, frozenset({"h1"})))
    assert [a.vm for a in out if isinstance(a, ForceHalt)] == ["a"]
    assert starts(out) == {"a": "h2"}


def test_a_failed_start_finishes_its_group_without_delay() -> None:
    r = three_hosts(vm("a", order=0, delay=5.0, on="h2"), vm("c", order=1, on="h2"), nft=2)
    r.handle(HostsFailed(1.0, frozenset({"h1", "h2"})))  # only h0 left
    out = r.handle(StartFinished(1.2, "a", "h0", ok=False))
    assert starts(out) == {"c": "h0"}  # a waits for its retry; c need not wait for it


def test_a_lower_group_crash_starts_at_once_even_during_a_later_group() -> None:
    r = three_hosts(vm("a", order=0, delay=3.0, on="h0"), vm("c", order=1, on="h1"))
    out = r.handle(VMExited(1.0, "c", "h1", internal_shutdown=False))
    assert set(starts(out)) == {"c"}
    out = r.handle(VMExited(1.1, "a", "h0", internal_shutdown=False))
    assert set(starts(out)) == {"a"}


# ----------------------------------------------------------- best-effort
def test_best_effort_starts_after_every_protected_vm_then_is_bounded() -> None:
    r = three_hosts(vm("p", order=3, on="h2"), vm("e", priority=BEST_EFFORT, on="h2"))
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert set(starts(out)) == {"p"}
    live = ALL - {"h2"}
    attempt = finish(r, 1.5, out)
    assert set(starts(attempt)) == {"e"}
    for k in range(2):  # tries 2 and 3, each retry_interval after the previous failure
        failed_at = 2.0 + 5.5 * k
        assert starts(finish(r, failed_at, attempt, ok=False)) == {}
        assert starts(r.handle(Pass(failed_at + 4.9, live))) == {}
        attempt = r.handle(Pass(failed_at + 5.0, live))
        assert set(starts(attempt)) == {"e"}
    last = finish(r, 20.0, attempt, ok=False)
    assert [a.obj for a in alerts(last, "ha_vm_restart_abandoned")] == ["e"]
    assert starts(r.handle(Pass(100.0, live))) == {}
    assert set(starts(r.handle(Pass(101.0, ALL)))) == {"e"}  # the liveset grew


def test_best_effort_without_room_spends_its_tries_then_gives_up() -> None:
    r = three_hosts(vm("e", 8192, priority=BEST_EFFORT, on="h0"), vm("f", on="h1"),
                    vm("g", on="h2"), nft=2, memory=8192)
    out = r.handle(HostsFailed(1.0, frozenset({"h0"})))
    for k in range(1, 5):
        out += r.handle(Pass(1.0 + 5 * k, ALL - {"h0"}))
    assert starts(out) == {}
    assert not alerts(out, "ha_protected_vm_restart_failed")
    assert [a.obj for a in alerts(out, "ha_vm_restart_abandoned")] == ["e"]


def test_a_best_effort_vm_gets_one_try_by_default_as_the_seed_says() -> None:
    hosts = [host(h) for h in ("h0", "h1", "h2")]
    default = Pool(tuple(hosts), (vm("e", priority=BEST_EFFORT, on="h0"),),
                   host_failures_to_tolerate=1)
    assert default.best_effort_attempts == 1
    r = Restarter(default, CONFIG)
    out = r.handle(HostsFailed(1.0, frozenset({"h0"})))
    where = starts(out)["e"]
    out = r.handle(StartFinished(1.5, "e", where, ok=False))
    assert [a.obj for a in alerts(out, "ha_vm_restart_abandoned")] == ["e"]
    for k in range(1, 4):  # no second try, however long the pool waits
        assert starts(r.handle(Pass(1.5 + 6 * k, ALL - {"h0"}))) == {}
    assert set(starts(r.handle(Pass(30.0, ALL)))) == {"e"}  # the liveset grew: tried again


def test_a_gpu_vm_restarts_only_on_a_host_with_its_device_class() -> None:
    hosts = (Host("h0", "h0", 4096, devices=("gpu",)), Host("h1", "h1", 8192),
             Host("h2", "h2", 4096, devices=("gpu", "fpga")))
    gpu = VM("g", "g", 1024, BEST_EFFORT, power=Power.RUNNING, resident="h0", devices=("gpu",))
    r = Restarter(Pool(hosts, (gpu,), host_failures_to_tolerate=1), CONFIG)
    out = r.handle(HostsFailed(1.0, frozenset({"h0"})))
    assert starts(out) == {"g": "h2"}  # h1 has more room, but no GPU
    assert "device class" in next(a for a in out if isinstance(a, StartVM)).why
    r.handle(StartFinished(1.5, "g", "h2", ok=True))
    out = r.handle(HostsFailed(2.0, frozenset({"h2"})))
    assert starts(out) == {}  # h0 is down too: no host offers a GPU, h1 is never used


def test_best_effort_internal_shutdown_stays_halted_crash_restarts() -> None:
    r = three_hosts(vm("e", priority=BEST_EFFORT, on="h0"), vm("f", priority=BEST_EFFORT, on="h1"))
    assert starts(r.handle(VMExited(1.0, "e", "h0", internal_shutdown=True))) == {}
    assert set(starts(r.handle(VMExited(1.0, "f", "h1", internal_shutdown=False)))) == {"f"}
    assert "e" not in starts(r.handle(Pass(50.0, ALL)))


# ----------------------------------------------------------- tolerance
def test_failures_beyond_tolerance_alert_once_and_bound_protected_vms() -> None:
    r = three_hosts(vm("p", on="h2"), vm("q", on="h1"), nft=1)
    first = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert not alerts(first, "ha_failures_exceed_tolerance")
    assert starts(first) == {"p": "h1"}
    finish(r, 1.5, first)
    out = r.handle(HostsFailed(2.0, frozenset({"h1"})))
    assert len(alerts(out, "ha_failures_exceed_tolerance")) == 1
    tries = {"p": 0, "q": 0}
    now = 2.0
    while now < 60:
        for name in starts(out):
            tries[name] += 1
        out = finish(r, now, out, ok=False)
        now += 1.0
        out += r.handle(Pass(now, frozenset({"h0"})))
        assert not alerts(out, "ha_failures_exceed_tolerance")
    assert tries == {"p": 3, "q": 3}  # bounded like best-effort


def test_within_tolerance_protected_vms_retry_forever() -> None:
    r = three_hosts(vm("p", on="h2"), nft=2)
    r.handle(HostsFailed(1.0, frozenset({"h1", "h2"})))
    tries = 1
    for k in range(10):
        finish(r, 1.0 + 5 * k, [StartVM("p", "h0")], ok=False)
        tries += bool(starts(r.handle(Pass(6.0 + 5 * k, frozenset({"h0"})))))
    assert tries == 11


# ----------------------------------------------------------- internal shutdown
@pytest.mark.parametrize("reboot", [True, False])
def test_protected_internal_shutdown_follows_the_pool_setting(reboot: bool) -> None:
    pool = make_pool([host("h0"), host("h1")], [vm("p", on="h0")], nft=1,
                     reboot_on_internal_shutdown=reboot)
    r = Restarter(pool, CONFIG)
    out = r.handle(VMExited(1.0, "p", "h0", internal_shutdown=True))
    out += r.handle(Pass(2.0, frozenset({"h0", "h1"})))
    assert set(starts(out)) == ({"p"} if reboot else set())


def test_protected_crash_restarts() -> None:
    r = three_hosts(vm("p", on="h1"))
    assert set(starts(r.handle(VMExited(1.0, "p", "h1", internal_shutdown=False)))) == {"p"}


def test_stale_exit_is_ignored() -> None:
    r = three_hosts(vm("p", on="h1"))
    assert r.handle(VMExited(1.0, "p", "h0", internal_shutdown=False)) == []
    assert r.pool.vm("p").running


def test_exit_of_a_vm_the_pool_does_not_know_is_ignored() -> None:
    r = three_hosts(vm("p", on="h1"))
    assert r.handle(VMExited(1.0, "operator-vm", "h1", internal_shutdown=False)) == []
    assert r.pool.vm("p").running


# ----------------------------------------------------------- capacity
def test_unplaceable_protected_vm_alerts_once_and_starts_when_capacity_returns() -> None:
    r = three_hosts(vm("p", 4096, on="h2"), vm("x", 4096, on="h0"), vm("y", 4096, on="h1"))
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert [a.obj for a in alerts(out, "ha_protected_vm_restart_failed")] == ["p"]
    for k in range(3):
        assert r.handle(Pass(2.0 + k, ALL - {"h2"})) == []
    back = r.handle(Pass(6.0, ALL))  # h2 rejoined
    assert starts(back) == {"p": "h2"}
    finish(r, 6.5, back)
    again = r.handle(HostsFailed(9.0, frozenset({"h2"})))  # a new episode alerts again
    assert [a.obj for a in alerts(again, "ha_protected_vm_restart_failed")] == ["p"]


def test_overcommitted_pool_restarts_what_fits_lowest_order_first() -> None:
    r = three_hosts(vm("late", 2048, order=1, on="h2"), vm("first", 3072, order=0, on="h2"),
                    vm("x", 3072, on="h0"), vm("y", 3072, on="h1"))
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert starts(out) == {}  # neither fits: 1024 MiB free on each survivor
    r = three_hosts(vm("late", 2048, order=1, on="h2"), vm("first", 2048, order=0, on="h2"),
                    vm("x", 2048, on="h0"), vm("y", 3072, on="h1"))
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert starts(out) == {"first": "h0"}
    after = finish(r, 1.5, out)
    assert starts(after) == {}
    assert [a.obj for a in alerts(after, "ha_protected_vm_restart_failed")] == ["late"]


# ----------------------------------------------------------- pause
def test_paused_restarts_start_nothing_until_the_pause_ends() -> None:
    r = three_hosts(vm("p", on="h2"))
    assert r.handle(PauseRestarts(0.5, until=10.0)) == []
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    assert starts(out) == {} and alerts(out, "ha_host_failed")
    assert starts(r.handle(Pass(9.9, ALL - {"h2"}))) == {}
    assert set(starts(r.handle(Pass(10.0, ALL - {"h2"})))) == {"p"}


# ----------------------------------------------------------- operator
def test_vms_the_operator_stopped_or_suspended_stay_down_until_started_again() -> None:
    r = three_hosts(vm("p", on="h0"), vm("e", priority=BEST_EFFORT, on="h0"))
    assert starts(r.handle(Stopped(1.0, "e", Power.HALTED))) == {}
    assert starts(r.handle(Stopped(1.1, "p", Power.SUSPENDED))) == {}
    assert (r.pool.vm("p").power, r.pool.vm("p").resident) == (Power.SUSPENDED, None)
    out = r.handle(HostsFailed(2.0, frozenset({"h0"})))
    assert starts(out) == {} and not [a for a in out if isinstance(a, ForceHalt)]
    assert starts(r.handle(Pass(9.0, ALL - {"h0"}))) == {}  # protected, but suspended
    assert starts(r.handle(Pass(19.0, ALL))) == {}  # the liveset grew: still down
    r.handle(Moved(20.0, "p", "h1"))  # vm-resume put it on h1
    assert set(starts(r.handle(HostsFailed(21.0, frozenset({"h1"}))))) == {"p"}


def test_a_stop_of_a_vm_no_longer_in_the_pool_is_ignored() -> None:
    r = three_hosts(vm("p", on="h0"))
    r.handle(Reconfigure(1.0, make_pool([host(h) for h in ("h0", "h1", "h2")], [])))
    assert r.handle(Stopped(1.1, "p", Power.HALTED)) == []
    assert r.pool.vms == ()


def test_an_installed_protected_vm_is_started_an_unprotected_one_is_not() -> None:
    r = three_hosts(vm("a", on="h0"))
    hosts = [host(h) for h in ("h0", "h1", "h2")]
    out = r.handle(Reconfigure(1.0, make_pool(hosts, [vm("a", on="h0"), vm("n"),
                                                      vm("u", priority=NONE)])))
    assert set(starts(out)) == {"n"}  # protected VMs are level-sensitive
    assert r.pool.vm("a").resident == "h0"


def test_start_reported_after_its_host_failed_counts_as_failed() -> None:
    r = three_hosts(vm("p", on="h2"), nft=2)
    out = r.handle(HostsFailed(1.0, frozenset({"h2"})))
    where = starts(out)["p"]
    r.handle(HostsFailed(1.1, frozenset({where})))
    after = r.handle(StartFinished(1.2, "p", where, ok=True))
    assert not r.pool.vm("p").running
    assert set(starts(after)) == {"p"} and starts(after)["p"] != where


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="retry_interval"):
        RestartConfig(retry_interval=0)
    with pytest.raises(PoolError, match=r"ha-best-effort-attempts must be 1\.\.100"):
        make_pool([host("h0")], [], nft=0, attempts=0)


# ----------------------------------------------------------- property
HOSTS = ("h0", "h1", "h2", "h3")
PRIORITIES = (RESTART, BEST_EFFORT, NONE)


@st.composite
def pools(draw: st.DrawFn) -> Pool:
    hosts = [Host(h, h, draw(st.sampled_from([2048, 4096, 6144])),
                  enabled=draw(st.booleans()) or h == "h0") for h in HOSTS]
    room = {h.uuid: h.memory_total for h in hosts}
    vms = []
    for k in range(draw(st.integers(1, 10))):
        memory = draw(st.sampled_from([512, 1024, 2048]))
        where = draw(st.sampled_from([None, *HOSTS]))
        if where is not None and room[where] < memory:
            where = None
        if where is not None:
            room[where] -= memory
        vms.append(VM(f"v{k}", f"v{k}", memory, draw(st.sampled_from(PRIORITIES)),
                      draw(st.integers(0, 2)), draw(st.sampled_from([0.0, 1.0])),
                      Power.RUNNING if where else Power.HALTED, where))
    return Pool(tuple(hosts), tuple(vms), host_failures_to_tolerate=draw(st.integers(0, 3)))


STEPS = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 99), st.booleans(),
                           st.floats(0.0, 3.0)), min_size=10, max_size=60)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(pool=pools(), steps=STEPS)
def test_random_inputs_never_double_start_or_overfill(
    pool: Pool, steps: list[tuple[int, int, bool, float]]
) -> None:
    r = Restarter(pool, CONFIG)
    live = set(HOSTS)
    outstanding: dict[str, str] = {}
    now = 0.0

    def check(actions: list[RestartAction]) -> None:
        view = r.pool  # already updated by the same input, which starts nothing itself
        reserved = {h: 0 for h in HOSTS}
        for v, h in outstanding.items():
            reserved[h] += view.vm(v).memory
        for action in actions:
            if not isinstance(action, StartVM):
                continue
            target = view.vm(action.vm)
            assert not target.running, f"{action.vm} started while running"
            assert action.vm not in outstanding, f"{action.vm} started while starting"
            assert target.priority is not NONE, f"unprotected {action.vm} started"
            assert action.host in live and view.host(action.host).enabled
            free = view.free_memory(action.host) - reserved[action.host]
            assert free >= target.memory, f"{action.vm} overfills {action.host}"
            reserved[action.host] += target.memory
            outstanding[action.vm] = action.host

    check(r.handle(Pass(now, frozenset(live))))
    for kind, pick, flag, dt in steps:
        now += dt
        if kind == 0:
            out = r.handle(Pass(now, frozenset(live)))
        elif kind == 1 and outstanding:
            name = sorted(outstanding)[pick % len(outstanding)]
            where = outstanding.pop(name)
            out = r.handle(StartFinished(now, name, where, ok=flag))
        elif kind == 2 and len(live) > 1:
            dead = sorted(live)[pick % len(live)]
            live.discard(dead)
            out = r.handle(HostsFailed(now, frozenset({dead})))
        elif kind == 3 and live != set(HOSTS):
            live.add(sorted(set(HOSTS) - live)[pick % (len(HOSTS) - len(live))])
            out = r.handle(Pass(now, frozenset(live)))
        elif kind == 4:
            running = [v for v in r.pool.vms if v.running]
            if not running:
                continue
            victim = running[pick % len(running)]
            assert victim.resident is not None
            out = r.handle(VMExited(now, victim.uuid, victim.resident, internal_shutdown=flag))
        elif kind == 5:
            out = r.handle(PauseRestarts(now, now + pick / 10))
        else:
            continue
        check(out)
    assert all(r.starting.get(v) == h for v, h in outstanding.items())
