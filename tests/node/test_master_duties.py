"""The master's duties in the daemon (:class:`MasterDuties`), in process and in loop time.

Real: the duties, the pure core they bind, the pool database on an SR file.
Fake: every host's agent (:class:`~tests.fakes.FakeAgent`) behind a scripted
RPC network, the liveset, the alert sink and the event log. The ``looptime``
plugin runs the loop's clock: a heartbeat interval, a start delay or the
fifteen seconds of a start's RPC timeout pass at once, and every time
asserted on is the loop's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hacluster.core.events import LivesetCommitted
from hacluster.mgmt.database import Database
from hacluster.node.master import MIN_GAP, START_TIMEOUT, TICK, Guests, MasterDuties

from ..conftest import LOOPTIME
from ..fakes import PLACEMENT, UUIDS, FakeAgent, Fault, Records, network, now, open_database

pytestmark = LOOPTIME

INTERVAL = 1.0


class Master:
    """Host 0's term of office: its duties, with every host's agent faked."""

    def __init__(self, database: Database, vm_dir: Path) -> None:
        self.agents = {u: FakeAgent({vm for vm, h in PLACEMENT.items() if h == u})
                       for u in UUIDS}
        self.net = network(self.agents)
        self.log = Records()
        self.alerts: list[tuple[str, str, str]] = []
        self.live = set(UUIDS)
        self.duties = MasterDuties(database, self.net, Guests(vm_dir), INTERVAL, self.log.write,
                                   lambda: frozenset(self.live), now,
                                   lambda *alert: self.alerts.append(alert))
        self.task: asyncio.Task[None] | None = None
        self.t0 = 0.0

    def run(self) -> None:
        """Take office now (the first pass runs at once)."""
        self.t0 = now()
        self.task = asyncio.create_task(self.duties.run())

    @property
    def running(self) -> bool:
        """The duties' loop is alive (a critical task: its end fences the master)."""
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        if self.task is not None:
            if self.task.done() and not self.task.cancelled():
                self.task.result()  # a crash of the duties fails the test
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def fail(self, *hosts: int, shut_down: bool = False) -> None:
        """The liveset commits without ``hosts``: fenced (failed) or shut down cleanly."""
        gone = frozenset(hosts)
        self.live -= {UUIDS[i] for i in hosts}
        self.duties.committed(LivesetCommitted(
            frozenset(range(len(UUIDS))) - gone, gone, frozenset(),
            excluded=gone if shut_down else frozenset()), UUIDS)

    def starts(self) -> list[tuple[float, str, str]]:
        """Every start request: (loop time since taking office, to the millisecond, host, vm)."""
        return [(round(t - self.t0, 3), host, r["vm"]) for t, host, r in self.net.requests("start")]

    def started(self, vm: str) -> list[str]:
        return [host for _, host, v in self.starts() if v == vm]

    def listed(self, host: str) -> list[tuple[float, int]]:
        """The surveys of ``host``: (loop time since taking office, the cursor asked from)."""
        return [(round(t - self.t0, 3), r["since"]) for t, h, r in self.net.requests("list")
                if h == host]

    def said(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """The log records of ``event`` that have every one of ``fields``."""
        return [r for r in self.log.events(event)
                if all(r.get(k) == v for k, v in fields.items())]


@pytest.fixture
async def master(tmp_path: Path) -> AsyncIterator[Master]:
    database = await open_database(tmp_path)
    office = Master(database, tmp_path / "vm-sr")
    try:
        yield office
    finally:
        await office.stop()
        database.close()


async def test_the_first_pass_takes_the_pool_over_and_passes_follow_each_interval(
        master: Master) -> None:
    master.run()
    await asyncio.sleep(2.5)
    assert master.said("master-duties", text="took over the pool", running=6)
    assert master.listed(UUIDS[1]) == [(0.0, 0), (1.0, 0), (2.0, 0)]  # one per interval
    assert [p["max_failures"] for p in master.log.events("plan")] == [2]  # logged on change
    assert master.duties.status()["plan"] == {
        "max_failures": 2, "exact": True, "configured": 1, "overcommitted": False,
        "why": master.log.events("plan")[0]["why"]}
    assert master.duties.status()["running"] == PLACEMENT
    assert master.starts() == [] and master.alerts == []


@pytest.mark.parametrize(("ahead", "wait"), [
    (None, 1.0),  # nothing waits: the interval
    (0.25, 0.25),  # an order delay ends in a quarter second: exactly then
    (1e-12, TICK),  # float noise ahead: a loop may fire that at once without moving its clock
    (0.0, MIN_GAP), (-3.0, MIN_GAP),  # due and not cleared by the pass: never spin
])
async def test_the_next_pass_waits_for_the_next_due_time(
        master: Master, monkeypatch: pytest.MonkeyPatch, ahead: float | None, wait: float) -> None:
    now = master.duties.clock()
    monkeypatch.setattr(master.duties.core, "next_wake",
                        lambda at: None if ahead is None else at + ahead)
    monkeypatch.setattr(master.duties, "clock", lambda: now)
    assert master.duties._until_next_pass() == pytest.approx(wait, abs=1e-15)


async def test_a_crash_a_host_reports_is_restarted_and_its_cursor_moves_on(
        master: Master) -> None:
    master.run()
    await asyncio.sleep(0.5)
    master.agents[UUIDS[1]].crash("vm-web1", returncode=-9)
    master.agents[UUIDS[0]].crash("vm-batch", kind="stopped", returncode=0)  # by the operator
    await asyncio.sleep(1.0)
    assert master.said("vm-exit", vm="vm-web1", on=UUIDS[1], kind="crash", returncode=-9)
    assert not master.said("vm-exit", vm="vm-batch")
    assert master.starts() == [(1.0, UUIDS[0], "vm-web1")]
    assert master.said("vm-started", vm="vm-web1", on=UUIDS[0])
    assert master.duties.status()["running"]["vm-web1"] == UUIDS[0]
    await asyncio.sleep(1.0)
    # the pass at 1.0 saw the exits; the start's answer brought another at once; from
    # then on each host is asked only for the exits after the last one seen (the
    # operator's stop included)
    for host in UUIDS[:2]:
        assert master.listed(host) == [(0.0, 0), (1.0, 0), (1.0, 1), (2.0, 1)]
    assert master.started("vm-batch") == [] and master.started("vm-web1") == [UUIDS[0]]


async def test_an_agent_that_restarted_is_asked_from_its_first_exit(master: Master) -> None:
    agent = master.agents[UUIDS[2]]
    agent.crash("vm-web2")
    agent.crash("vm-web2")  # two exits before this term of office: history
    agent.running.add("vm-web2")
    master.run()
    await asyncio.sleep(1.5)
    assert master.listed(UUIDS[2]) == [(0.0, 0), (1.0, 2)]
    assert not master.said("vm-exit") and master.starts() == []
    agent.exits, agent.last_seq = [], 0  # a new agent process numbers its exits from 1 again
    agent.crash("vm-web2")  # seq 1: below the cursor, and not an exit already seen
    await asyncio.sleep(2.0)
    assert master.listed(UUIDS[2])[2:4] == [(2.0, 2), (3.0, 0)]
    assert master.said("vm-exit", vm="vm-web2", on=UUIDS[2], kind="crash")
    assert master.started("vm-web2")


async def test_a_failed_host_is_alerted_and_its_vms_restart_in_order_in_loop_time(
        master: Master) -> None:
    for agent in master.agents.values():
        agent.start_takes = 3.0
    master.run()
    await asyncio.sleep(0.5)
    master.fail(0)
    await asyncio.sleep(20)
    assert master.alerts == [("ha_host_failed", UUIDS[0],
                              "host host0 failed and has fenced; 4 VM(s) forced halted")]
    assert master.said("alert", name="ha_host_failed", obj=UUIDS[0])
    assert sorted(r["vm"] for r in master.said("vm-force-halted", on=UUIDS[0])) == [
        "vm-batch", "vm-dhcp", "vm-scratch", "vm-sql"]
    # dhcp (order 0) at once; sql (order 1) when dhcp's start answered (3 s) and its
    # start delay (2 s) passed; the best-effort batch once no protected VM waits;
    # the unprotected scratch never
    assert master.starts() == [(0.5, UUIDS[1], "vm-dhcp"), (5.5, UUIDS[1], "vm-sql"),
                               (8.5, UUIDS[1], "vm-batch")]
    status = master.duties.status()
    assert status["halted"] == ["vm-scratch"]
    assert status["running"] == {"vm-dhcp": UUIDS[1], "vm-sql": UUIDS[1],
                                 "vm-batch": UUIDS[1], "vm-web1": UUIDS[1], "vm-web2": UUIDS[2]}
    assert [p["max_failures"] for p in master.log.events("plan")] == [2, 1]
    assert master.running


async def test_a_clean_shutdown_is_no_failure(master: Master) -> None:
    master.run()
    await asyncio.sleep(0.5)
    master.fail(2, shut_down=True)
    await asyncio.sleep(1.0)
    assert master.alerts == [] and not master.said("vm-force-halted")
    assert master.started("vm-web2") == [UUIDS[0]]  # protected: started elsewhere
    assert master.listed(UUIDS[2]) == [(0.0, 0)]  # no longer surveyed


async def test_an_overcommitted_pool_is_alerted_once_and_planned(master: Master) -> None:
    await master.duties.database.commit(
        {"op": "pool-set", "fields": {"ha-host-failures-to-tolerate": "2"}})
    master.run()
    await asyncio.sleep(0.5)
    assert master.duties.status()["plan"]["overcommitted"] is False
    master.fail(2)
    await asyncio.sleep(3.0)
    assert [a[0] for a in master.alerts] == ["ha_host_failed", "ha_pool_overcommitted"]
    assert master.alerts[1][1] == "pool"
    assert master.alerts[1][2].startswith("no plan for 2 host failure(s)")
    assert master.duties.status()["plan"]["overcommitted"] is True
    assert [(p["max_failures"], p["overcommitted"]) for p in master.log.events("plan")] == [
        (2, False), (1, True)]


async def test_a_start_whose_answer_is_lost_is_unsure_until_the_host_answers(
        master: Master) -> None:
    master.net.faults.append(Fault("start", "lose-answer"))  # it did start the VM
    master.run()
    await asyncio.sleep(0.5)
    master.fail(2)
    await asyncio.sleep(5.0)
    [(_, host, _)] = master.starts()  # never started twice: it runs there
    unsure = master.said("vm-start-unsure", vm="vm-web2", on=host)
    assert len(unsure) == 1 and "closed without answering" in unsure[0]["error"]
    assert not master.said("vm-started")
    assert master.duties.status()["running"]["vm-web2"] == host
    assert master.duties.core.unsure == {}


@pytest.mark.parametrize(("fault", "unsure_after"), [("drop", 0.0), ("hang", START_TIMEOUT)])
async def test_a_start_that_did_not_happen_is_retried_on_another_host(
        master: Master, fault: str, unsure_after: float) -> None:
    master.net.faults.append(Fault("start", fault))
    master.run()
    await asyncio.sleep(0.5)
    master.fail(2)
    await asyncio.sleep(START_TIMEOUT + 5)
    [(t1, first, _), (t2, second, _)] = master.starts()
    assert (t1, t2 - t1) == (0.5, unsure_after)  # retried as soon as its host answers
    assert second != first
    assert master.said("vm-start-unsure", vm="vm-web2", on=first)
    assert master.duties.status()["running"]["vm-web2"] == second
    assert master.agents[first].running == {vm for vm, h in PLACEMENT.items() if h == first}


MALFORMED: list[tuple[Any, str]] = [
    ({"ok": True, "running": "vm-web1", "exits": [], "last_seq": 0}, "running must name VMs"),
    ({"ok": True, "running": {1: 2}, "exits": [], "last_seq": 0}, "running must name VMs"),
    ({"ok": True, "running": {}, "exits": [], "last_seq": True}, "last_seq must be an int"),
    ({"ok": True, "running": {}, "exits": []}, "'last_seq'"),
    ({"ok": True, "running": {}, "exits": 7, "last_seq": 1}, "not iterable"),
    ({"ok": True, "running": {}, "exits": ["vm-web1"], "last_seq": 1}, "string indices"),
    ({"ok": True, "running": {}, "exits": [{"seq": "1", "vm": "vm-web1", "kind": "crash",
                                            "returncode": 1}], "last_seq": 1}, "exit record"),
    ({"ok": True, "running": {}, "exits": [{"seq": 1, "vm": "vm-web1", "kind": "crash"}],
      "last_seq": 1}, "'returncode'"),
]


@pytest.mark.parametrize(("answer", "why"), MALFORMED)
async def test_a_malformed_list_answer_is_logged_and_counts_as_no_answer(
        master: Master, answer: Any, why: str) -> None:
    master.agents[UUIDS[1]].list_answer = answer
    master.run()
    await asyncio.sleep(2.5)
    logged = [r["text"] for r in master.said("master-duties")
              if r["text"].startswith(f"malformed list answer from {UUIDS[1]}: ")]
    assert len(logged) == 3 and why in logged[0]  # every pass
    # a host that did not answer keeps its VMs: nothing it may run starts elsewhere
    assert master.starts() == []
    assert master.duties.status()["running"]["vm-web1"] == UUIDS[1]
    assert master.duties.core.cursor(UUIDS[1]) == 0
    master.agents[UUIDS[1]].list_answer = None  # well formed again: a crash is seen
    master.agents[UUIDS[1]].crash("vm-web1")
    await asyncio.sleep(1.0)
    assert master.started("vm-web1") and master.running


@pytest.mark.parametrize("answer", [{"ok": False, "error": "busy"}, "garbage", None])
async def test_an_unanswered_survey_counts_as_no_answer_silently(master: Master,
                                                                  answer: Any) -> None:
    if answer is None:
        del master.net.hosts[UUIDS[1]]  # RpcError: connection refused
    else:
        master.agents[UUIDS[1]].list_answer = answer
    master.run()
    await asyncio.sleep(1.5)
    assert master.said("master-duties", text="took over the pool", running=5)
    assert not [r for r in master.said("master-duties") if "malformed" in r["text"]]
    assert master.starts() == []
    assert master.duties.status()["running"]["vm-web1"] == UUIDS[1]


async def test_an_exit_of_a_vm_the_pool_does_not_know_is_ignored(master: Master) -> None:
    master.run()
    await asyncio.sleep(0.5)
    master.agents[UUIDS[0]].crash("vm-ghost")  # not in the pool database
    master.agents[UUIDS[1]].crash("vm-web1")
    await asyncio.sleep(2.0)
    assert master.running  # a remote agent's record must not end the duties (and fence)
    assert master.started("vm-web1") and not master.started("vm-ghost")
    assert master.listed(UUIDS[0])[-1] == (2.0, 1)


async def test_leaving_office_cancels_the_starts_in_flight(master: Master) -> None:
    for agent in master.agents.values():
        agent.start_takes = 10.0
    master.run()
    await asyncio.sleep(0.5)
    master.fail(2)
    await asyncio.sleep(1.0)
    [(_, host, _)] = master.starts()
    await master.stop()
    assert [r["vm"] for r in master.agents[host].cancelled] == ["vm-web2"]
    await asyncio.sleep(20)
    assert not master.said("vm-started") and not master.said("vm-start-unsure")
    assert master.agents[host].running == {vm for vm, h in PLACEMENT.items() if h == host}
