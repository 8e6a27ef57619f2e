"""The management plane inside a node (:class:`Plane`), in process and in loop time.

Three planes of one pool, each in a fake node (:class:`FakeNode`: what the
plane uses of its daemon, recording what the plane asks of it), share one
heartbeat SR file and reach each other's agent operations through a scripted
RPC network (:class:`~tests.fakes.Network`). Real: the planes, the pool
database on the SR, the local backups, the heartbeat SR's header.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hacluster.core.duties import HostList, Surveyed
from hacluster.core.node import CoreConfig, HostCore, Mode
from hacluster.core.pool import PoolError
from hacluster.core.pooldb import DEFAULT_HEARTBEAT_SR
from hacluster.core.timing import Timing
from hacluster.lab.workloads import default_pool
from hacluster.mgmt.database import Database, from_snapshot, snapshot_bytes
from hacluster.model.address import Address
from hacluster.node.alerts import ALERT_PRIORITY
from hacluster.node.config import Management, NodeConfig
from hacluster.node.eventlog import EventLog
from hacluster.node.evidence import EvidenceBook
from hacluster.node.master import MasterDuties
from hacluster.node.plane import Plane
from hacluster.node.sr_thread import Storage
from hacluster.node.status import SharedStatus
from hacluster.node.tasks import Supervisor
from hacluster.storage.redolog import load_backup
from hacluster.wire.keys import KeyRing

from ..conftest import LOOPTIME
from ..fakes import HOSTS, KEY, UUIDS, Network, Records, make_sr, network, settle, start

pytestmark = LOOPTIME


def address(index: int) -> str:
    return f"10.9.0.{index + 1}"


class FakeNode:
    """What the plane uses of its node (:class:`~hacluster.node.plane.NodeHandle`)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.records = Records()
        self.log: EventLog = self.records
        self.keys = config.keys
        self.storage = Storage(config, config.keys, DEFAULT_HEARTBEAT_SR, config.sr)
        self.roster = config.seed_roster()
        self.critical: list[str] = []
        self.tasks = Supervisor(self.records.write, self.critical.append)
        self.core: HostCore | None = None
        self.duties: MasterDuties | None = None
        self.evidence = EvidenceBook()
        self.timing = config.timing
        self.shared_status = SharedStatus(self._status, lambda: 0.0, ttl=0.0)
        self.live: frozenset[str] | None = None  # HA off
        self.beats: dict[int, list[float | None]] = {}  # when each host was last heard
        self.asked: list[tuple[Any, ...]] = []  # what the plane asked of its node
        self.plane: Plane | None = None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _status(self) -> dict[str, Any]:
        return {"phase": "NORMAL", "measured": {"slot_write": {
            "count": 4, "sum": 0.4, "max": 0.2, "p50": 0.1, "p99": 0.2}}}

    def live_hosts(self) -> frozenset[str] | None:
        return self.live

    def last_beats(self, index: int) -> list[float | None]:
        return self.beats.get(index, [None] * len(self.config.addresses))

    async def agent_request(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.plane is not None
        return await self.plane.agent_request(request)  # the daemon's agent passes them on

    async def arm(self, generation: int, timeout: float | None, armed: bool,
                  start: dict[str, dict[str, Any]]) -> None:
        self.asked.append(("arm", generation, timeout, armed, sorted(start)))

    def disarm(self, leaving: bool) -> None:
        self.asked.append(("disarm", leaving))

    def leave(self) -> None:
        self.asked.append(("leave", self.now()))

    def start_duties(self) -> None:
        self.asked.append(("start_duties",))

    async def rekey(self, keys: KeyRing) -> None:
        self.keys = keys
        self.storage.rekey(keys)

    def close(self) -> None:
        self.storage.close()


class Pool:
    """Three hosts' planes on one SR, each other's agents reached through ``net``."""

    def __init__(self, root: Path) -> None:
        sr = make_sr(root)
        self.nodes: list[FakeNode] = []
        self.planes: list[Plane] = []
        self.net: Network = network({})
        hosts = tuple((Address(address(i), 7000),) for i in range(HOSTS))
        for i in range(HOSTS):
            (root / f"host{i}").mkdir()
            config = NodeConfig(
                index=i, hosts=hosts, sr=sr, key=KEY, timing=Timing.derive(5.0),
                mode=Mode.STATEFILE, status_socket=root / f"host{i}" / "status.sock", log=None,
                pool=default_pool(HOSTS), agent_port=7100, vm_dir=root / "vm-sr",
                mgmt=Management(7443, root / "cert.pem", root / "key.pem", root / "ca.pem",
                                b"0123456789abcdef"))
            node = FakeNode(config)
            plane = Plane(node)
            node.plane = plane
            plane.agents = self.net  # every plane reaches the others' agents through it
            self.net.hosts[plane.me] = plane.agent_request
            self.nodes.append(node)
            self.planes.append(plane)

    async def settle(self) -> None:
        for node in self.nodes:
            await settle(node.tasks)

    def close(self) -> None:
        for plane, node in zip(self.planes, self.nodes, strict=True):
            if plane.database is not None:
                plane.database.close()
            node.close()


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Pool]:
    planes = Pool(tmp_path)
    try:
        yield planes
    finally:
        await planes.settle()
        assert all(not node.critical for node in planes.nodes)
        planes.close()


async def master_of(pool: Pool, index: int = 0) -> Database:
    """Host ``index`` takes office as it does when it gains the master lock."""
    pool.planes[index].master_gained()
    await pool.settle()
    database = pool.planes[index].database
    assert database is not None
    return database


# ------------------------------------------------------------ agent operations
async def test_ping_says_whether_ha_is_armed(pool: Pool) -> None:
    plane, node = pool.planes[1], pool.nodes[1]
    assert await plane.agent_request({"op": "ping"}) == {"ok": True, "armed": False}
    node.core = HostCore(CoreConfig(Timing.derive(5.0), hosts=HOSTS, generation=1), 1,
                         boot=1, now=0.0, liveset=frozenset(range(HOSTS)))
    assert await plane.agent_request({"op": "ping"}) == {"ok": True, "armed": True}


async def test_disarm_at_once_and_leave_after_the_answer(pool: Pool) -> None:
    plane, node = pool.planes[2], pool.nodes[2]
    assert await plane.agent_request({"op": "ha-disarm"}) == {"ok": True}
    assert node.asked == [("disarm", False)]
    t0 = node.now()
    assert await plane.agent_request({"op": "shutdown"}) == {"ok": True}
    await asyncio.sleep(0.1)
    assert node.asked == [("disarm", False)]  # the answer goes out before the node leaves
    await asyncio.sleep(0.2)
    assert node.asked[1:] == [("leave", t0 + 0.2)]


@pytest.mark.parametrize(("request_", "error"), [
    ({"op": "frobnicate"}, "unknown op 'frobnicate'"),
    ({}, "unknown op None"),
    ({"op": "db-backup", "generation": 9}, "'payload'"),
    ({"op": "db-backup", "generation": "nine", "payload": b""}, "invalid literal"),
    ({"op": "db-backup", "generation": 9, "payload": b"\x93garbage"}, "does not decode"),
    ({"op": "ha-arm", "generation": 5, "timeout": 3.0}, "holds generation 1, not 5"),
    ({"op": "ha-arm", "timeout": 3.0}, "'generation'"),
])
async def test_a_bad_agent_request_is_answered_with_an_error_and_changes_nothing(
        pool: Pool, request_: dict[str, Any], error: str) -> None:
    plane, node = pool.planes[1], pool.nodes[1]
    answer = await plane.agent_request(request_)
    assert answer["ok"] is False and error in answer["error"]
    assert node.asked == [] and not plane.backup_path.exists()
    assert plane.known.generation == 1


async def test_arm_with_the_sr_generation_arms_the_node_with_its_vms(pool: Pool) -> None:
    answer = await pool.planes[0].agent_request({"op": "ha-arm", "generation": 1,
                                                 "timeout": 3.0})
    assert answer == {"ok": True}
    assert pool.nodes[0].asked == [("arm", 1, 3.0, True,
                                    ["vm-batch", "vm-dhcp", "vm-scratch", "vm-sql"])]


async def test_a_backup_older_than_the_one_held_is_ignored(pool: Pool) -> None:
    plane = pool.planes[1]
    newer = replace(start(), generation=7, master=UUIDS[2])
    answer = await plane.agent_request({"op": "db-backup", "generation": 7,
                                        "payload": snapshot_bytes(newer)})
    assert answer == {"ok": True, "kept": 7}
    assert plane.known == newer and plane.known_master == 2  # HA off: it names the master
    stored = plane.backup_path.read_bytes()
    older = replace(start(), generation=5, master=UUIDS[0])
    answer = await plane.agent_request({"op": "db-backup", "generation": 5,
                                        "payload": snapshot_bytes(older)})
    assert answer == {"ok": True, "kept": 7}
    assert plane.backup_path.read_bytes() == stored and plane.known_master == 2
    got = await plane.agent_request({"op": "db-get"})
    assert got["ok"] and from_snapshot(got["payload"]) == newer


async def test_db_get_without_a_backup_answers_an_empty_payload(pool: Pool) -> None:
    assert await pool.planes[2].agent_request({"op": "db-get"}) == {"ok": True, "payload": b""}


# ------------------------------------------------------------ master role and alerts
async def test_a_new_master_loads_the_newest_copy_and_pushes_it_to_every_host(
        pool: Pool) -> None:
    newest = replace(start(), generation=9, master=UUIDS[2], other_config={"site": "b"})
    await pool.planes[2].agent_request({"op": "db-backup", "generation": 9,
                                        "payload": snapshot_bytes(newest)})
    database = await master_of(pool)
    assert database.db.generation == 10 and database.db.other_config == {"site": "b"}
    assert database.db.master == UUIDS[0]  # recorded as master before anything else
    notes = [r["text"] for r in pool.nodes[0].records.events("pooldb")]
    assert f"loaded generation 9 from the backup of {UUIDS[2]}" in notes
    for plane in pool.planes:
        assert plane.known == database.db and plane.known_master == 0
        found = load_backup(plane.backup_path, KEY)
        assert found is not None and found[0] == 10
    assert pool.planes[0].is_master() and not pool.planes[1].is_master()
    assert pool.nodes[0].asked == []  # HA is off here: no duties to start
    assert pool.planes[0].last_error == ""


async def test_a_master_alert_is_stored_mailed_and_pushed(pool: Pool) -> None:
    database = await master_of(pool)
    pool.planes[0].alert("ha_host_failed", UUIDS[2], "host host2 failed and has fenced")
    await pool.settle()
    [message] = database.db.messages
    assert (message.name, message.obj, message.body, message.priority) == (
        "ha_host_failed", UUIDS[2], "host host2 failed and has fenced",
        ALERT_PRIORITY["ha_host_failed"])
    assert pool.nodes[0].records.events("alert-mail") == [
        {"name": "ha_host_failed", "to": "not configured"}]
    assert pool.planes[1].known.messages == (message,)  # the backups were pushed


async def test_a_backup_a_host_does_not_take_is_reported(pool: Pool) -> None:
    del pool.net.hosts[UUIDS[2]]  # host 2's agent is not listening
    database = await master_of(pool)
    await database.commit({"op": "vm-set", "vm": "vm-sql", "fields": {"order": "3"}})
    await pool.settle()
    assert pool.planes[0].last_error == f"backup not pushed to {[UUIDS[2]]}"
    assert pool.planes[1].known.generation == database.db.generation


async def test_a_change_committed_during_a_push_is_pushed_after_it(pool: Pool) -> None:
    database = await master_of(pool)
    await pool.settle()
    answer = pool.net.hosts[UUIDS[1]]
    first_push = asyncio.Event()

    async def slow(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("op") == "db-backup":
            first_push.set()
            await asyncio.sleep(1.0)  # the push is in flight while the next change lands
        return await answer(request)

    pool.net.hosts[UUIDS[1]] = slow
    await database.commit({"op": "vm-set", "vm": "vm-sql", "fields": {"order": "3"}})
    await first_push.wait()
    await database.commit({"op": "vm-set", "vm": "vm-sql", "fields": {"order": "4"}})
    await pool.settle()
    assert [p.known.generation for p in pool.planes] == [database.db.generation] * 3


async def test_alerts_raised_without_a_master_are_collected_by_the_next_one(
        pool: Pool) -> None:
    pool.planes[1].local_alert("ha_survival_rule_2", UUIDS[1], "host1 runs on alone")
    await pool.settle()
    assert pool.nodes[1].records.events("alert") == [
        {"name": "ha_survival_rule_2", "obj": UUIDS[1], "body": "host1 runs on alone",
         "stored": "when a master is back"}]
    assert pool.nodes[1].records.events("alert-mail") == [
        {"name": "ha_survival_rule_2", "to": "not configured"}]  # mailed at once
    database = await master_of(pool)
    assert [(m.name, m.obj, m.priority) for m in database.db.messages] == [
        ("ha_survival_rule_2", UUIDS[1], ALERT_PRIORITY["ha_survival_rule_2"])]
    assert pool.planes[1].pending == []  # collected once
    assert await pool.planes[1].agent_request({"op": "pending-alerts"}) == {
        "ok": True, "alerts": []}
    assert pool.nodes[0].records.events("alert-mail") == []  # not mailed twice


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A local TCP port that refuses connections (bound, not listening)."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


async def test_a_mail_failure_is_logged_and_the_alert_kept(pool: Pool,
                                                           refusing_port: int) -> None:
    database = await master_of(pool)
    await database.commit({"op": "pool-set", "fields": {
        "other-config:mail-destination": "ops@example.org",
        "other-config:ssmtp-mailhub": f"127.0.0.1:{refusing_port}"}})
    pool.planes[0].alert("ha_pool_overcommitted", "pool", "no plan for 1 host failure(s)")
    await pool.settle()
    assert [m.name for m in database.db.messages] == ["ha_pool_overcommitted"]
    [tried, failed] = pool.nodes[0].records.events("alert-mail")
    assert tried == {"name": "ha_pool_overcommitted", "to": ["ops@example.org"]}
    assert failed["name"] == "ha_pool_overcommitted" and "refused" in failed["error"]


async def test_a_change_reaches_the_masters_duties_as_reconfigure(pool: Pool) -> None:
    database = await master_of(pool)
    duties = pool.planes[0].duties(1.0)
    pool.nodes[0].duties = duties
    everyone = frozenset(UUIDS)
    duties.feed(Surveyed(0.0, everyone, dict.fromkeys(everyone, HostList(frozenset())),
                         database.db.pool))  # the take-over: from now on the view is its own
    assert duties.core.took_over and duties.pool.vm("vm-sql").order == 1
    await database.commit({"op": "vm-set", "vm": "vm-sql", "fields": {"order": "4"}})
    await pool.settle()
    assert duties.pool.vm("vm-sql").order == 4
    assert pool.planes[0].current_pool() is duties.pool


async def test_an_alert_the_database_cannot_store_is_logged_and_still_mailed(
        pool: Pool, tmp_path: Path) -> None:
    database = await master_of(pool)
    backup, database.backup = database.backup, tmp_path / "gone" / "pooldb.backup"
    pool.planes[0].alert("ha_host_failed", UUIDS[1], "host host1 failed and has fenced")
    await pool.settle()
    [refused] = pool.nodes[0].records.events("alert")
    assert refused["name"] == "ha_host_failed"
    assert refused["error"].startswith("not acknowledged as stored: ")
    assert pool.nodes[0].records.events("alert-mail") == [
        {"name": "ha_host_failed", "to": "not configured"}]
    database.backup = backup  # the disk is back: the database takes the next alert
    pool.planes[0].alert("ha_host_failed", UUIDS[2], "host host2 failed and has fenced")
    await pool.settle()
    assert database.db.messages[-1].obj == UUIDS[2]
    assert pool.planes[1].known == database.db  # and pushes it


async def test_the_master_that_loses_its_lock_closes_the_database(pool: Pool) -> None:
    await master_of(pool)
    pool.planes[0].master_lost()
    assert pool.planes[0].database is None and not pool.planes[0].is_master()


async def test_reset_master_follows_a_known_address_and_refuses_others(pool: Pool) -> None:
    plane = pool.planes[0]
    await master_of(pool)
    with pytest.raises(PoolError, match=r"no host of this pool has address '10\.9\.9\.9'"):
        plane.reset_master("10.9.9.9")
    assert plane.database is not None and plane.known_master == 0  # nothing changed
    assert plane.reset_master(address(1)) == (
        f"this host now follows the master at {address(1)} (host 1)")
    assert plane.known_master == 1 and plane.database is None  # it is no longer master
    assert plane.master_endpoints() == [(address(1), 7443)]


async def test_a_move_whose_stop_fails_moves_nothing(pool: Pool) -> None:
    await master_of(pool)
    with pytest.raises(PoolError, match=f"VM vm-web1 could not be stopped on {UUIDS[1]}: "
                                        "unknown op 'stop'; nothing was moved"):
        await pool.planes[0].move("vm-web1", UUIDS[1], UUIDS[2])
    assert [host for _, host, _ in pool.net.requests("stop")] == [UUIDS[1]]
    assert pool.net.requests("start") == []
