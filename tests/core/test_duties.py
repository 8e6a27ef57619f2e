"""The master's duties, pure (core/duties.py), and the one interpreter (core/effects.py)."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from hacluster.core.duties import (
    Duties,
    DutyAction,
    ExitRecord,
    ExitSeen,
    HostList,
    Outcome,
    Plan,
    PlanChanged,
    StartAnswered,
    Surveyed,
    TookOver,
)
from hacluster.core.effects import carry_out, carry_out_duties, duty_inputs
from hacluster.core.events import (
    Disarmed,
    Fence,
    LivesetCommitted,
    MasterGained,
    MasterLost,
    Output,
    PetWatchdog,
    PhaseChanged,
    ReadSlots,
    SendHeartbeat,
    Suspect,
    Wait,
    Waiting,
    Wakeup,
    Watchdog,
    WriteSlot,
)
from hacluster.core.messages import Phase
from hacluster.core.pool import VM, Host, Pool, Power, Priority
from hacluster.core.restarts import (
    Alert,
    ForceHalt,
    HostsFailed,
    HostsLeft,
    RestartConfig,
    StartVM,
)

from ..conftest import report as make_report

HOSTS = ("h0", "h1", "h2")
ALL = frozenset(HOSTS)


def vm(name: str, on: str | None, priority: Priority = Priority.RESTART) -> VM:
    return VM(name, name, 1024, priority, 0, 0.0,
              Power.RUNNING if on else Power.HALTED, on)


def pool(*vms: VM, tolerate: int = 1) -> Pool:
    return Pool(tuple(Host(h, h, 8192) for h in HOSTS), vms, host_failures_to_tolerate=tolerate)


def runs(*vms: str, exits: tuple[ExitRecord, ...] = (), last: int = 0) -> HostList:
    return HostList(frozenset(vms), exits, last)


def survey(now: float, answers: Mapping[str, HostList | None], db: Pool,
           live: frozenset[str] = ALL) -> Surveyed:
    return Surveyed(now, live, answers, db)


def starts(actions: list[DutyAction]) -> dict[str, str]:
    return {a.vm: a.host for a in actions if isinstance(a, StartVM)}


def duties() -> Duties:
    return Duties(RestartConfig(retry_interval=5.0))


DB = pool(vm("a", "h0"), vm("b", "h1"), vm("c", "h2"))


# ----------------------------------------------------------- taking over
def test_take_over_trusts_what_the_hosts_report_over_the_database() -> None:
    d = duties()
    # the database says b runs on h1; h2 reports it (an operator's move the
    # database missed): it runs on h2, and nothing is started
    out = d.handle(survey(1.0, {"h0": runs("a"), "h1": runs(), "h2": runs("b", "c")}, DB))
    assert [a for a in out if isinstance(a, TookOver)] == [TookOver(ALL, 3)]
    assert starts(out) == {}
    assert d.pool is not None and d.pool.vm("b").resident == "h2"


def test_take_over_restarts_a_vm_missing_from_its_live_answering_host() -> None:
    d = duties()
    out = d.handle(survey(1.0, {"h0": runs("a"), "h1": runs(), "h2": runs("c")}, DB))
    assert set(starts(out)) == {"b"}  # h1 answered without b: it crashed


def test_take_over_keeps_what_the_operator_halted_or_suspended_down() -> None:
    d = duties()
    db = pool(vm("a", "h0"), vm("e", None, Priority.BEST_EFFORT),
              replace(vm("s", None), power=Power.SUSPENDED))
    live = frozenset({"h0", "h2"})  # h1, where e and s last ran, is gone too
    out = d.handle(survey(1.0, {"h0": runs("a"), "h2": runs()}, db, live))
    assert starts(out) == {}
    assert d.pool is not None and d.pool.vm("s").power is Power.SUSPENDED
    assert starts(d.handle(survey(5.0, {"h0": runs("a"), "h2": runs()}, db, live))) == {}
    # the same database believing e and s ran on h1: both are restarted
    d = duties()
    believed = pool(vm("a", "h0"), vm("e", "h1", Priority.BEST_EFFORT), vm("s", "h1"))
    out = d.handle(survey(1.0, {"h0": runs("a"), "h2": runs()}, believed, live))
    assert set(starts(out)) == {"s"}  # the protected one first; e waits its turn
    assert set(starts(d.handle(StartAnswered(1.5, "s", starts(out)["s"],
                                             Outcome.STARTED)))) == {"e"}


def test_take_over_leaves_the_vms_of_a_host_that_does_not_answer() -> None:
    d = duties()
    out = d.handle(survey(1.0, {"h0": runs("a"), "h1": None, "h2": runs("c")}, DB))
    assert starts(out) == {}
    assert d.pool is not None and d.pool.vm("b").resident == "h1"


def test_take_over_treats_vms_of_hosts_outside_the_liveset_as_failed() -> None:
    d = duties()
    live = frozenset({"h0", "h2"})
    out = d.handle(survey(1.0, {"h0": runs("a"), "h2": runs("c")}, DB, live))
    assert [a.obj for a in out if isinstance(a, Alert) and a.name == "ha_host_failed"] == ["h1"]
    assert ForceHalt("b", "h1") in out
    assert set(starts(out)) == {"b"} and starts(out)["b"] in live


def test_inputs_before_the_take_over_are_dropped_but_failed_hosts_remembered() -> None:
    d = duties()
    assert d.handle(HostsFailed(0.5, frozenset({"h1"}))) == []
    assert d.handle(StartAnswered(0.6, "x", "h0", Outcome.STARTED)) == []
    assert not d.took_over
    out = d.handle(survey(1.0, {"h0": runs("a"), "h1": runs("b"), "h2": runs("c")}, DB))
    assert ForceHalt("b", "h1") in out  # remembered, fed at the first pass


# ----------------------------------------------------------- after the take-over
def taken_over() -> Duties:
    d = duties()
    d.handle(survey(1.0, {"h0": runs("a"), "h1": runs("b"), "h2": runs("c")}, DB))
    return d


def test_an_unsure_start_waits_for_the_hosts_answer() -> None:
    d = taken_over()
    d.handle(HostsFailed(2.0, frozenset({"h2"})))
    out = d.handle(survey(2.0, {"h0": runs("a"), "h1": runs("b")}, DB, ALL - {"h2"}))
    target = starts(out)["c"]
    assert d.handle(StartAnswered(2.1, "c", target, Outcome.UNSURE, "timed out")) == []
    assert d.unsure == {"c": target}
    # the host does not answer: still unsure, and c is not started anywhere else
    silent = {h: (None if h == target else runs(*(["a"] if h == "h0" else ["b"])))
              for h in ("h0", "h1")}
    assert starts(d.handle(survey(3.0, silent, DB, ALL - {"h2"}))) == {}
    assert d.unsure == {"c": target}
    # it answers running c: the start succeeded after all
    answers = {"h0": runs("a"), "h1": runs("b")}
    answers[target] = runs(*answers[target].running, "c")
    out = d.handle(survey(4.0, answers, DB, ALL - {"h2"}))
    assert starts(out) == {} and d.unsure == {}
    assert d.pool is not None and d.pool.vm("c").resident == target


def test_an_unsure_start_on_a_host_that_left_is_retried() -> None:
    d = taken_over()
    d.handle(HostsFailed(2.0, frozenset({"h2"})))
    target = starts(d.handle(survey(2.0, {"h0": runs("a"), "h1": runs("b")}, DB,
                                    ALL - {"h2"})))["c"]
    d.handle(StartAnswered(2.1, "c", target, Outcome.UNSURE))
    rest = ALL - {"h2", target}
    out = d.handle(survey(3.0, {h: runs() for h in rest}, DB, frozenset(rest)))
    assert d.unsure == {} and set(starts(out)) >= {"c"}


def test_exits_reported_by_a_host_restart_protected_vms_once() -> None:
    d = taken_over()
    crash = ExitRecord(1, "b", "crash", -9)
    stopped = ExitRecord(2, "a", "stopped", 0)
    out = d.handle(survey(2.0, {"h0": runs("a"), "h1": runs(exits=(crash, stopped), last=2),
                                "h2": runs("c")}, DB))
    assert [a for a in out if isinstance(a, ExitSeen)] == [ExitSeen("b", "h1", "crash", -9)]
    assert "b" in starts(out)
    assert d.cursor("h1") == 2


def test_a_host_whose_exit_numbers_went_back_is_asked_from_its_first() -> None:
    d = taken_over()
    d.handle(survey(2.0, {"h0": runs("a"), "h1": runs("b", last=7), "h2": runs("c")}, DB))
    assert d.cursor("h1") == 0  # its agent restarted: 0 < 7 was never seen before
    d.handle(survey(2.0, {"h0": runs("a"), "h1": runs("b", exits=(ExitRecord(3, "x", "crash"),),
                                                         last=3), "h2": runs("c")}, DB))
    assert d.cursor("h1") == 3


def test_the_plan_is_published_when_it_changes_and_overcommitment_alerts() -> None:
    d = duties()
    tight = Pool(tuple(Host(h, h, 1024) for h in HOSTS),
                 (vm("a", "h0"), vm("b", "h1"), vm("c", "h2")), host_failures_to_tolerate=1)
    out = d.handle(survey(1.0, {"h0": runs("a"), "h1": runs("b"), "h2": runs("c")}, tight))
    [changed] = [a for a in out if isinstance(a, PlanChanged)]
    assert changed.plan.overcommitted and changed.plan.max_failures == 0
    assert [a.name for a in out if isinstance(a, Alert)] == ["ha_pool_overcommitted"]
    again = d.handle(survey(2.0, {"h0": runs("a"), "h1": runs("b"), "h2": runs("c")}, tight))
    assert not [a for a in again if isinstance(a, PlanChanged | Alert)]


def test_a_commit_means_failed_and_departed_hosts_to_the_duties() -> None:
    commit = LivesetCommitted(frozenset({0}), frozenset({1, 2}), frozenset(),
                              excluded=frozenset({2}))
    assert duty_inputs(5.0, commit, HOSTS) == [HostsFailed(5.0, frozenset({"h1"})),
                                               HostsLeft(5.0, frozenset({"h2"}))]
    assert duty_inputs(5.0, LivesetCommitted(ALL_I, frozenset(), ALL_I), HOSTS) == []


ALL_I = frozenset({0, 1, 2})


# ----------------------------------------------------------- the interpreter
@dataclass
class Recorder:
    """Every effect called, with its arguments."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))


def one_of_each_output() -> list[Output]:
    report = make_report(0, 1)
    return [SendHeartbeat(report, frozenset({1})), WriteSlot(report), ReadSlots(),
            PetWatchdog(Watchdog.LEASE, 5.0), Fence("why"), Disarmed("bye"),
            LivesetCommitted(ALL_I, frozenset(), frozenset()), MasterGained(),
            MasterLost("lost"), PhaseChanged(Phase.NORMAL, Phase.STABILIZING, "x"),
            Suspect(1, "network"), Waiting((Wait(1, "r", "t"),)), Wakeup(9.0)]


def test_every_core_output_type_has_an_effect() -> None:
    outputs = one_of_each_output()
    assert {type(o) for o in outputs} == set(typing.get_args(Output))
    recorder = Recorder()
    carry_out(outputs, recorder)
    assert [name for name, _ in recorder.calls] == [
        "send_heartbeat", "request_io", "request_io", "pet_watchdog", "fence", "disarmed",
        "liveset_committed", "master_gained", "master_lost", "phase_changed", "suspect",
        "waiting", "wake_at"]
    assert recorder.calls[3] == ("pet_watchdog", (Watchdog.LEASE, 5.0))


def test_every_duty_action_type_has_an_effect() -> None:
    plan = Plan(1, True, 1, False, "")
    actions: list[DutyAction] = [StartVM("v", "h0"), ForceHalt("v", "h1"), Alert("n", "o", "b"),
                                 TookOver(ALL, 2), ExitSeen("v", "h0", "crash", 1),
                                 PlanChanged(plan)]
    assert {type(a) for a in actions} == set(typing.get_args(DutyAction))
    recorder = Recorder()
    carry_out_duties(actions, recorder)
    assert [name for name, _ in recorder.calls] == [
        "start_vm", "force_halted", "alert", "took_over", "exit_seen", "plan_changed"]
    assert recorder.calls[-1] == ("plan_changed", (plan,))


def test_an_unknown_output_is_refused() -> None:
    with pytest.raises(AssertionError):
        carry_out([object()], Recorder())  # type: ignore[list-item]


def test_the_exit_of_a_vm_the_database_does_not_know_is_only_reported() -> None:
    d = taken_over()
    stranger = ExitRecord(1, "operator-vm", "crash", -9)
    out = d.handle(survey(2.0, {"h0": runs("a", exits=(stranger,), last=1), "h1": runs("b"),
                                "h2": runs("c")}, DB))
    assert [a for a in out if isinstance(a, ExitSeen)] == [
        ExitSeen("operator-vm", "h0", "crash", -9)]
    assert starts(out) == {}


def test_a_host_silent_at_the_take_over_is_taken_over_when_it_answers() -> None:
    """Schedule 3/21 clustered: the master took over while host 1 was isolated; host
    1 had rebooted (its VMs died with its last boot) and, once back, answered
    running nothing. Its VMs, kept where the database put them, were never
    restarted until it was taken over by the same rule as the others."""
    d = duties()
    out = d.handle(survey(1.0, {"h0": runs("a"), "h1": None, "h2": runs("c")}, DB))
    assert starts(out) == {}  # silent: b stays on h1
    out = d.handle(survey(2.0, {"h0": runs("a"), "h1": runs(exits=(ExitRecord(1, "x", "crash"),),
                                                         last=1), "h2": runs("c")}, DB))
    assert set(starts(out)) == {"b"}  # it answered without b: b crashed
    assert not [a for a in out if isinstance(a, ExitSeen)]  # its earlier exits are history
    assert d.cursor("h1") == 1


def test_a_silent_host_that_answers_with_its_vms_keeps_them() -> None:
    d = duties()
    d.handle(survey(1.0, {"h0": runs("a"), "h1": None, "h2": runs("c")}, DB))
    out = d.handle(survey(2.0, {"h0": runs("a"), "h1": runs("b"), "h2": runs("c")}, DB))
    assert starts(out) == {}
    assert d.pool is not None and d.pool.vm("b").resident == "h1"
