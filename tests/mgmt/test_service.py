"""The management verbs (:class:`Service`) end to end on a real pool database.

The service is driven through its :class:`~hacluster.mgmt.service.Control`
protocol, here :class:`FakeControl`: the pool database is real (on an SR
file), the hosts' agents, the heartbeat SR's header and the moves of VMs are
scripted and recorded. A refused verb must leave the database, the SR and
the hosts as they were.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hacluster.core.pool import Pool, PoolError, Power
from hacluster.core.pooldb import DEFAULT_HEARTBEAT_SR, PoolDB
from hacluster.mgmt.database import Database, RolledBack
from hacluster.mgmt.service import Service, pool_uuid
from hacluster.mgmt.verbs import Call
from hacluster.storage.members import Member, MemberTable
from hacluster.storage.volume import MIN_SIZE
from hacluster.wire.keys import KeyRing

from ..conftest import LOOPTIME
from ..fakes import KEY, PLACEMENT, UUIDS, open_database, start

pytestmark = LOOPTIME


class FakeControl:
    """What the verbs need from the daemon, with every host scripted."""

    index = 0

    def __init__(self, database: Database) -> None:
        self.database: Database | None = database
        self.master = database
        self.live: frozenset[str] | None = None  # HA off
        self.is_armed = False
        self.in_rule2 = False
        self.answers: dict[str, dict[str, dict[str, Any] | str]] = {}  # host -> op -> answer
        self.asked: list[tuple[str, list[str]]] = []
        self.requests: dict[str, dict[str, Any]] = {}  # the last request of each op
        self.sr: list[tuple[int, bool, int]] = []  # (generation, active, database generation)
        self.moves: list[tuple[str, str, str]] = []
        self.powered: dict[str, tuple[Power, str | None]] = {}  # the operator's starts, stops
        self.starting_now: dict[str, str] = {}  # VMs "HA is starting"
        self.did: list[str] = []
        self.members = MemberTable(7, 0, 8, tuple(
            Member(i, u, f"h{i}", (f"10.9.0.{i + 1}:7000",)) for i, u in enumerate(UUIDS)))
        self.member_writes: list[tuple[MemberTable, int | None]] = []
        self.member_write_error: Exception | None = None
        self.evidence_records: list[dict[str, Any]] = []
        self.on_sr = DEFAULT_HEARTBEAT_SR  # the heartbeat SR this (master) host uses
        self.formatted = {DEFAULT_HEARTBEAT_SR: 1}  # SR -> the generation last written
        self.sr_moves: list[str] = []  # use_sr's SRs, in order
        self.write_error: PoolError | None = None  # write_generation(active=True) fails
        self.database_error = ""
        self.claimed: list[str] = []  # master_without_database's reasons
        self.open_error: Exception | None = None  # become_master fails with it

    def live_hosts(self) -> frozenset[str] | None:
        return self.live

    def armed(self) -> bool:
        return self.is_armed

    def rule2(self) -> bool:
        return self.in_rule2

    async def ask_all(self, request: dict[str, Any],
                      hosts: list[str]) -> dict[str, dict[str, Any] | str]:
        self.asked.append((request["op"], hosts))
        self.requests[request["op"]] = request
        if request["op"] == "sr-probe":
            return {h: self.answers.get(h, {}).get("sr-probe", self._probe(request["sr"]))
                    for h in hosts}
        return {h: self.answers.get(h, {}).get(request["op"], {"ok": True}) for h in hosts}

    def _probe(self, sr: str) -> dict[str, Any]:
        """What a host finds at SR ``sr`` by default: big enough, O_DIRECT, and empty
        until formatted (then this pool's, at the generation written)."""
        found: dict[str, Any] = {"ok": True, "path": f"/dev/{sr}", "size": MIN_SIZE,
                                 "direct": True, "current_direct": True}
        if sr in self.formatted:
            found.update(generation=self.formatted[sr], state="INVALID")
        else:
            found["holds"] = ""
        return found

    async def write_generation(self, generation: int, active: bool) -> None:
        if active and self.write_error is not None:
            raise self.write_error
        self.sr.append((generation, active, self.master.db.generation))

    def heartbeat_sr(self) -> str:
        return self.on_sr

    async def prepare_sr(self, sr: str, generation: int) -> None:
        self.formatted[sr] = generation

    async def use_sr(self, sr: str) -> None:
        self.sr_moves.append(sr)
        self.on_sr = sr
        self.database = self.master  # opened there when it held none

    def newest_copy(self) -> PoolDB:
        return self.master.db

    def master_without_database(self, why: str) -> None:
        self.claimed.append(why)

    async def become_master(self) -> Database:
        if self.open_error is not None:
            raise self.open_error
        self.database = self.master
        return self.master

    def reset_master(self, address: str) -> str:
        self.did.append(f"reset-master {address}")
        return f"following {address}"

    async def emergency_disarm(self) -> None:
        self.did.append("emergency-disarm")

    async def move(self, vm: str, source: str, target: str) -> None:
        self.moves.append((vm, source, target))
        self.powered[vm] = (Power.RUNNING, target)

    async def start_vm(self, vm: str, host: str) -> None:
        error = self.answers.get(host, {}).get("start")
        if isinstance(error, str):
            raise PoolError(f"VM {vm} did not start on {host}: {error}")
        self.powered[vm] = (Power.RUNNING, host)

    async def stop_vm(self, vm: str, host: str, power: Power) -> None:
        error = self.answers.get(host, {}).get("stop")
        if isinstance(error, str):
            raise PoolError(f"VM {vm} could not be stopped on {host}: {error}")
        self.powered[vm] = (power, None)

    def starting(self) -> dict[str, str]:
        return self.starting_now

    def current_pool(self) -> Pool:
        """The database's pool with the moves, starts and stops made (as the master's
        duties know them)."""
        pool = self.master.db.pool
        return pool.with_vms(replace(vm, power=self.powered[vm.uuid][0],
                                     resident=self.powered[vm.uuid][1])
                             for vm in pool.vms if vm.uuid in self.powered)

    def address(self, host_uuid: str) -> str:
        return f"10.9.0.{UUIDS.index(host_uuid) + 1}"

    def key_ring(self) -> KeyRing:
        return KeyRing(KEY)

    def ha_mode(self) -> str:
        return "statefile"

    def evidence(self) -> dict[str, Any]:
        return {"names": {"0": "host0", "1": "host1", "2": "host2"},
                "uuids": {"h0": "host0", "h1": "host1", "h2": "host2"},
                "records": list(self.evidence_records)}

    async def member_table(self) -> MemberTable:
        return self.members

    async def write_members(self, table: MemberTable, freed: int | None) -> None:
        if self.member_write_error is not None:
            raise self.member_write_error
        self.member_writes.append((table, freed))
        self.members = table

    def my_uuid(self) -> str:
        return UUIDS[0]

    def ops(self) -> list[str]:
        return [op for op, _ in self.asked]


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[FakeControl]:
    database = await open_database(tmp_path)
    try:
        yield FakeControl(database)
    finally:
        database.close()


async def call(control: FakeControl, verb: str, *flags: str,
               **params: str) -> list[dict[str, Any]]:
    """Every answer of ``verb``; the last is the result."""
    service = Service(control)
    return [out async for out in service.answer(Call(verb, dict(params), flags))]


async def refused(control: FakeControl, verb: str, match: str, *flags: str,
                  **params: str) -> list[dict[str, Any]]:
    """Run a verb that must be refused; the answers it gave before the refusal.

    Asserts that nothing changed: not the database (nor its SR record), nothing
    written to the heartbeat SR, no VM moved."""
    before = (control.master.db, sr_bytes(control), list(control.sr), list(control.moves),
              dict(control.powered))
    service = Service(control)
    progress: list[dict[str, Any]] = []
    with pytest.raises(PoolError, match=match):
        async for out in service.answer(Call(verb, dict(params), flags)):
            progress.append(out)
    assert (control.master.db, sr_bytes(control), control.sr, control.moves,
            control.powered) == before
    return progress


def sr_bytes(control: FakeControl) -> tuple[bytes, bytes]:
    """The SR file (its redo log) and the master's local backup, as they are on disk."""
    return Path(control.master.device.path).read_bytes(), control.master.backup.read_bytes()


def result(answers: list[dict[str, Any]]) -> Any:
    assert answers[-1]["ok"] is True
    return answers[-1]["result"]


# ------------------------------------------------------------ reading
async def test_status_shows_the_pool_hosts_and_vms(control: FakeControl) -> None:
    status = result(await call(control, "status"))
    assert status["pool"]["uuid"] == pool_uuid(start()) and status["pool"]["master"] == UUIDS[0]
    assert status["pool"]["tolerance"] == {"max": 2, "exact": True, "configured": 1,
                                           "overcommitted": False}
    assert [(h["uuid"], h["address"], h["live"], h["master"]) for h in status["hosts"]] == [
        (UUIDS[0], "10.9.0.1", True, True), (UUIDS[1], "10.9.0.2", True, False),
        (UUIDS[2], "10.9.0.3", True, False)]
    assert {vm["uuid"]: vm["host"] for vm in status["vms"]} == PLACEMENT
    control.live = frozenset(UUIDS[:2])
    status = result(await call(control, "status"))
    assert [h["live"] for h in status["hosts"]] == [True, True, False]


async def test_a_host_that_is_not_master_answers_no_verb(control: FakeControl) -> None:
    control.database = None
    await refused(control, "status", "holds no pool database")
    await refused(control, "vm-param-set", "holds no pool database", uuid="vm-sql", order="2")


# ------------------------------------------------------------ changing
async def test_a_change_is_durable_before_it_is_acknowledged(control: FakeControl,
                                                             tmp_path: Path) -> None:
    assert result(await call(control, "vm-param-set", uuid="vm-sql", order="3")) is None
    assert control.master.db.pool.vm("vm-sql").order == 3
    assert result(await call(control, "vm-param-get", uuid="vm-sql", **{
        "param-name": "order"})) == 3
    again = await Database.open(Path(control.master.device.path), tmp_path / "other.backup", KEY,
                                start())  # another host, from the SR's redo log
    assert again.db.pool.vm("vm-sql").order == 3 and again.db.generation == 2
    again.close()


@pytest.mark.parametrize(("verb", "params", "match"), [
    ("vm-param-set", {"uuid": "vm-sql", "order": "-1"}, "whole number"),
    ("vm-param-set", {"uuid": "vm-nope", "order": "1"}, "no VM with uuid vm-nope"),
    ("vm-param-set", {"uuid": "vm-sql", "memory": "1"}, "cannot be set"),
    ("pool-param-set", {"uuid": "pool-other", "name-label": "x"}, "no pool with uuid"),
    ("host-disable", {"uuid": "host-9"}, "no host"),
    ("pool-ha-disable", {}, "HA is not enabled"),
    ("message-list", {"since": "yesterday"}, "since must be a message number"),
    ("pool-param-get", {"param-name": "colour"}, "pool has no parameter 'colour'"),
])
async def test_a_refused_verb_changes_nothing(control: FakeControl, verb: str,
                                              params: dict[str, str], match: str) -> None:
    assert await refused(control, verb, match, **params) == []
    assert control.asked == []


async def test_host_shutdown_is_refused_while_it_runs_a_protected_vm(
        control: FakeControl) -> None:
    await refused(control, "host-shutdown", r"runs protected VM\(s\) web1", uuid=UUIDS[1])
    assert control.asked == []  # the host was not asked to shut down
    await call(control, "vm-param-set", uuid="vm-web1", **{"ha-restart-priority": ""})
    assert "shutting down cleanly" in result(await call(control, "host-shutdown",
                                                        uuid=UUIDS[1]))
    assert control.asked == [("shutdown", [UUIDS[1]])]


# ------------------------------------------------------------ HA enable and disable
async def test_ha_enable_is_refused_unless_every_host_answers(control: FakeControl) -> None:
    control.answers[UUIDS[2]] = {"ping": f"{UUIDS[2]}: connection refused"}
    progress = await refused(control, "pool-ha-enable", "not answering: host2",
                             **{"ha-config:timeout": "30"})
    assert progress == [{"progress": "checking that all 3 hosts are live"}]
    assert control.ops() == ["ping"]  # and no host was armed


@pytest.mark.parametrize(("params", "match"), [
    ({"ha-config:timeout": "0.5"}, "timeout-floor"),  # checked after the ping, before the SR
    ({"ha-config:timeout": "inf"}, "timeout-ceiling"),
    ({"ha-config:timeout": "soon"}, "must be seconds"),
    ({"ha-config:colour": "red"}, "unknown HA setting"),
    ({"heartbeat-sr-uuids": "sr-b,sr-c"}, "a pool heartbeats on one SR"),
    ({"heartbeat-sr-uuids": "sr-b", "heartbeat-sr-uuid": "sr-b"}, "give the heartbeat SR once"),
    ({"heartbeat-sr-uuids": "x" * 200}, "at most 128 printable"),
])
async def test_ha_enable_with_bad_settings_writes_nothing(control: FakeControl,
                                                          params: dict[str, str],
                                                          match: str) -> None:
    await refused(control, "pool-ha-enable", match, **params)
    assert "ha-arm" not in control.ops() and "sr-probe" not in control.ops()
    assert control.sr == [] and control.sr_moves == [] and control.master.db.generation == 1


async def test_ha_enable_writes_the_sr_then_records_then_arms_every_host(
        control: FakeControl) -> None:
    control.answers[UUIDS[1]] = {"ha-arm": "the heartbeat SR holds generation 8, not 9"}
    answers = await call(control, "pool-ha-enable", **{"ha-config:timeout": "30"})
    db = control.master.db
    assert db.ha.enabled and db.ha.timeout == 30.0 and db.ha.heartbeat_sr == "heartbeat-sr"
    generation = db.ha.sr_generation
    assert control.sr == [(generation, True, 1)]  # written before the database records it
    assert db.generation == 2
    assert control.ops() == ["ping", "sr-probe", "sr-probe", "ha-arm"]  # checked, not moved
    assert control.formatted == {DEFAULT_HEARTBEAT_SR: generation}
    assert [a.get("progress") for a in answers[:-1]] == [
        "checking that all 3 hosts are live", "checking heartbeat SR heartbeat-sr on all 3 hosts",
        f"writing generation {generation} to heartbeat SR heartbeat-sr at /dev/heartbeat-sr "
        "(not armed yet)", "heartbeat SR heartbeat-sr: every host reads the same volume",
        "writing a new generation to heartbeat SR heartbeat-sr",
        "arming every host", "host0: armed",
        "host1: the heartbeat SR holds generation 8, not 9", "host2: armed"]
    assert result(answers) == f"HA enabled: generation {generation}, timeout 30 s"
    assert control.sr_moves == []  # no move
    await refused(control, "pool-ha-enable", "already enabled")

    answers = await call(control, "pool-ha-disable")
    assert not control.master.db.ha.enabled
    assert control.sr[1:] == [(generation, False, 3)]  # recorded, then the SR marked invalid
    assert control.ops()[-1] == "ha-disarm"
    assert result(answers) == "HA disabled; VMs keep running"


async def test_ha_enable_on_another_sr_checks_formats_moves_then_arms_there(
        control: FakeControl) -> None:
    answers = await call(control, "pool-ha-enable", **{"heartbeat-sr-uuids": "sr-b"})
    db = control.master.db
    generation = db.ha.sr_generation
    assert db.ha.enabled and db.ha.heartbeat_sr == "sr-b"
    assert control.formatted["sr-b"] == generation  # formatted for this enable first
    assert control.sr_moves == ["sr-b"] and control.on_sr == "sr-b"
    assert control.sr == [(generation, True, 1)]  # on the new SR, before the record
    assert control.ops() == ["ping", "sr-probe", "sr-probe", "ha-arm"]
    assert control.requests["ha-arm"]["sr"] == "sr-b"  # every host moves its lanes there
    assert [a.get("progress") for a in answers[:5]] == [
        "checking that all 3 hosts are live", "checking heartbeat SR sr-b on all 3 hosts",
        f"writing generation {generation} to heartbeat SR sr-b at /dev/sr-b (not armed yet)",
        "heartbeat SR sr-b: every host reads the same volume",
        "moving the pool database from heartbeat SR heartbeat-sr to sr-b"]
    await call(control, "pool-ha-disable")
    await call(control, "pool-ha-enable")  # re-enabled where the pool is now: no move
    assert control.master.db.ha.heartbeat_sr == "sr-b" and control.sr_moves == ["sr-b"]


@pytest.mark.parametrize(("host", "found", "match"), [
    (1, {"ok": True, "error": "node.toml maps no path for SR 'sr-b'"},
     "not usable: host1: node.toml maps no path"),
    (2, "connection refused", "not usable: host2: connection refused"),
    (1, {"ok": True, "path": "/dev/sdz", "size": MIN_SIZE - 4096, "direct": True,
         "current_direct": True, "holds": ""}, "host1: /dev/sdz holds .* bytes; .* at least"),
    (2, {"ok": True, "path": "/srv/b", "size": MIN_SIZE, "direct": False,
         "current_direct": True, "holds": ""}, "host2: /srv/b refuses O_DIRECT"),
    (0, {"ok": True, "path": "/dev/sdb", "size": MIN_SIZE, "direct": True,
         "current_direct": True, "holds": "holds a heartbeat SR (another pool's, or an "
         "earlier format's)"}, "another pool's.*refusing to format it.*--force"),
])
async def test_ha_enable_refuses_an_unfit_sr_changing_nothing(
        control: FakeControl, host: int, found: dict[str, Any] | str, match: str) -> None:
    control.answers[UUIDS[host]] = {"sr-probe": found}
    await refused(control, "pool-ha-enable", match, **{"heartbeat-sr-uuids": "sr-b"})
    assert "sr-b" not in control.formatted and control.sr_moves == [] and control.sr == []
    assert not control.master.db.ha.enabled and control.master.db.generation == 1
    assert "ha-arm" not in control.ops()


async def test_ha_enable_with_force_formats_a_volume_holding_other_data(
        control: FakeControl) -> None:
    found = {**control._probe("sr-b"), "holds": "is not empty (non-zero data at byte 0)"}
    control.answers[UUIDS[0]] = {"sr-probe": found}
    await refused(control, "pool-ha-enable", "is not empty", **{"heartbeat-sr-uuids": "sr-b"})
    control.answers.clear()  # after the format every host reads the new generation
    await call(control, "pool-ha-enable", "--force", **{"heartbeat-sr-uuids": "sr-b"})
    assert control.master.db.ha.heartbeat_sr == "sr-b"


async def test_ha_enable_refuses_an_sr_a_host_does_not_share(control: FakeControl) -> None:
    """host2 maps sr-b to a volume of its own: after the format it reads nothing of it."""
    own = {"ok": True, "path": "/srv/local-b", "size": MIN_SIZE, "direct": True,
           "current_direct": True, "holds": ""}
    control.answers[UUIDS[2]] = {"sr-probe": own}
    await refused(control, "pool-ha-enable",
                  r"not one volume shared by every host .*host2: reads nothing of this "
                  r"pool at /srv/local-b: another volume",
                  **{"heartbeat-sr-uuids": "sr-b"})
    assert control.sr_moves == [] and control.sr == [] and not control.master.db.ha.enabled


async def test_ha_enable_that_fails_after_the_move_moves_the_pool_back(
        control: FakeControl) -> None:
    control.write_error = PoolError("could not write the heartbeat SR: I/O error")
    with pytest.raises(PoolError, match="could not write the heartbeat SR"):
        await call(control, "pool-ha-enable", **{"heartbeat-sr-uuids": "sr-b"})
    generation = control.formatted["sr-b"]
    assert control.sr_moves == ["sr-b", DEFAULT_HEARTBEAT_SR]  # and back
    assert control.sr == [(generation, False, 1)]  # the new SR marked unused
    assert not control.master.db.ha.enabled and "ha-arm" not in control.ops()



async def test_a_change_that_breaks_the_plan_is_refused_while_ha_is_on(
        control: FakeControl) -> None:
    await call(control, "pool-ha-enable", **{"ha-config:timeout": "30"})
    await call(control, "pool-param-set", **{"ha-host-failures-to-tolerate": "2"})
    await refused(control, "host-disable", "would break the failover plan", uuid=UUIDS[1])



# ------------------------------------------------------------ evacuation
async def test_evacuate_moves_every_vm_protected_first_and_disables_the_host(
        control: FakeControl) -> None:
    answers = await call(control, "host-evacuate", uuid=UUIDS[0])
    assert [vm for vm, _, _ in control.moves] == ["vm-dhcp", "vm-sql", "vm-batch",
                                                  "vm-scratch"]
    assert all(source == UUIDS[0] and target != UUIDS[0] for _, source, target
               in control.moves)
    assert not control.master.db.pool.host(UUIDS[0]).enabled
    assert answers[0] == {"progress": "host0 disabled; moving 4 VM(s)"}
    assert "evacuated: 4 VM(s) moved" in result(answers)


async def test_evacuate_without_room_elsewhere_is_refused(control: FakeControl) -> None:
    control.live = frozenset(UUIDS[:1])  # the other hosts are down
    await refused(control, "host-evacuate", "no room on the other live enabled hosts",
                  uuid=UUIDS[0])
    assert control.master.db.pool.host(UUIDS[0]).enabled


# ------------------------------------------------------------ the VM lifecycle
def power(control: FakeControl, vm: str) -> tuple[Power, str | None]:
    """The VM's power state and host, as the database records them."""
    record = control.master.db.pool.vm(vm)
    return record.power, record.resident


async def test_vm_shutdown_of_a_protected_vm_is_refused_until_its_protection_is_removed(
        control: FakeControl) -> None:
    await refused(control, "vm-shutdown", "protected by HA.*Remove its protection first: "
                  "vm-param-set uuid=vm-sql ha-restart-priority=", uuid="vm-sql")
    await call(control, "vm-param-set", uuid="vm-sql", **{"ha-restart-priority": ""})
    answers = await call(control, "vm-shutdown", uuid="vm-sql")
    assert answers[0] == {"progress": "sql on host0: stopping"}
    assert result(answers) == "VM sql shut down"
    assert power(control, "vm-sql") == (Power.HALTED, None)
    assert control.current_pool().vm("vm-sql").power is Power.HALTED
    await refused(control, "vm-shutdown", "halted: it does not run", uuid="vm-sql")
    assert control.master.db.audit[-1].verb == "vm-shutdown"


async def test_vm_start_that_leaves_the_plan_short_warns_and_needs_force(
        control: FakeControl) -> None:
    await call(control, "pool-ha-enable", **{"ha-config:timeout": "30"})
    for name in ("big1", "big2"):
        await call(control, "vm-install", uuid=f"vm-{name}", memory="3400",
                   **{"name-label": name})
    assert power(control, "vm-big1") == (Power.HALTED, None)
    await call(control, "vm-start", uuid="vm-big1")  # host1 or host2: 184 MiB left there
    first = power(control, "vm-big1")[1]
    # the other one on the last host with room: host0's dhcp and sql would fit nowhere
    await refused(control, "vm-start", r"start of VM big2 on host\d would leave a plan for "
                  r"0 host failure\(s\), 1 configured .*overcommitted.*--force",
                  uuid="vm-big2")
    answers = await call(control, "vm-start", "--force", uuid="vm-big2")
    assert result(answers).startswith("VM big2 runs on host")
    assert power(control, "vm-big2")[1] not in (None, first, UUIDS[0])


async def test_vm_start_on_a_named_host_is_checked(control: FakeControl) -> None:
    await call(control, "vm-install", uuid="vm-x", memory="3000", **{"name-label": "x"})
    await refused(control, "vm-start", "host0 has 2560 MiB free; VM x needs 3000 MiB",
                  uuid="vm-x", host="host0")
    await refused(control, "vm-start", "no host 'host9'", uuid="vm-x", host="host9")
    control.live = frozenset(UUIDS[:2])
    await refused(control, "vm-start", "host2 is not live and enabled", uuid="vm-x",
                  host=UUIDS[2])
    await call(control, "vm-start", uuid="vm-x", host="host1")
    assert power(control, "vm-x") == (Power.RUNNING, UUIDS[1])
    await refused(control, "vm-start", "already runs on host1", uuid="vm-x")


async def test_a_start_the_host_refuses_puts_the_record_back(control: FakeControl) -> None:
    await call(control, "vm-install", uuid="vm-x", memory="100", **{"name-label": "x"})
    control.answers = {u: {"start": "exec format error"} for u in UUIDS}
    service = Service(control)
    with pytest.raises(PoolError, match="exec format error"):
        async for _ in service.answer(Call("vm-start", {"uuid": "vm-x"})):
            pass
    assert power(control, "vm-x") == (Power.HALTED, None)


async def test_suspend_keeps_a_protected_vm_down_until_resumed(control: FakeControl) -> None:
    await call(control, "pool-ha-enable", **{"ha-config:timeout": "30"})
    assert "kept on its disks" in result(await call(control, "vm-suspend", uuid="vm-sql"))
    assert power(control, "vm-sql") == (Power.SUSPENDED, None)
    await refused(control, "vm-start", "suspended: resume it", uuid="vm-sql")
    await call(control, "vm-resume", uuid="vm-sql", host="host2")
    assert power(control, "vm-sql") == (Power.RUNNING, UUIDS[2])
    await refused(control, "vm-resume", "running, not suspended", uuid="vm-sql")


async def test_install_uninstall_and_their_refusals(control: FakeControl) -> None:
    await refused(control, "vm-install", "memory must be MiB", memory="lots",
                  **{"name-label": "x"})
    await refused(control, "vm-install", "only be protected as best-effort", memory="64",
                  devices="gpu0", **{"name-label": "g", "ha-restart-priority": "restart"})
    await refused(control, "vm-install", "already installed", uuid="vm-sql", memory="64",
                  **{"name-label": "again"})
    answer = result(await call(control, "vm-install", memory="64", devices="gpu0",
                               **{"name-label": "g", "ha-restart-priority": "best-effort"}))
    uuid = answer["uuid"]
    assert control.master.db.pool.vm(uuid).devices == ("gpu0",)
    await refused(control, "vm-uninstall", "runs on host0: shut it down first",
                  uuid="vm-scratch")
    await call(control, "vm-install", memory="64", **{"name-label": "g"})
    await refused(control, "vm-uninstall", "2 VMs are named 'g': give its uuid", uuid="g")
    await call(control, "vm-uninstall", uuid=uuid)
    assert uuid not in {vm.uuid for vm in control.master.db.pool.vms}
    await call(control, "vm-uninstall", uuid="g")  # a name-label alone names it
    assert "g" not in {vm.name for vm in control.master.db.pool.vms}


async def test_a_vm_ha_is_starting_is_left_alone(control: FakeControl) -> None:
    control.starting_now = {"vm-batch": UUIDS[1]}
    for verb in ("vm-shutdown", "vm-suspend", "vm-reboot"):
        await refused(control, verb, "being started by HA; try again", uuid="vm-batch")
    await refused(control, "vm-migrate", "being started by HA", uuid="vm-batch",
                  host="host1")


async def test_migrate_is_a_cold_move_and_reboot_stays_put(control: FakeControl) -> None:
    answers = await call(control, "vm-migrate", uuid="vm-web1", host="host2")
    assert answers[0]["progress"] == "web1: host1 -> host2 (a cold move: stopped, then started)"
    assert "cannot be migrated live" in result(answers)
    assert control.moves == [("vm-web1", UUIDS[1], UUIDS[2])]
    assert power(control, "vm-web1") == (Power.RUNNING, UUIDS[2])
    await refused(control, "vm-migrate", "already runs on host2", uuid="vm-web1",
                  host="host2")
    await call(control, "vm-reboot", uuid="vm-web1")
    assert control.moves[-1] == ("vm-web1", UUIDS[2], UUIDS[2])


async def test_rebalance_moves_vms_home_one_at_a_time(control: FakeControl) -> None:
    # host1 failed: HA restarted web1 on host2 and web2 ran on; host1 is back
    control.powered["vm-web1"] = (Power.RUNNING, UUIDS[2])
    control.powered["vm-scratch"] = (Power.RUNNING, UUIDS[1])  # unprotected: stays
    before = control.master.db
    dry = result(await call(control, "pool-ha-rebalance", "--dry-run"))
    assert dry == ["web1: host2 -> host1 (home)"]
    assert control.moves == [] and control.master.db.pool == before.pool
    answers = await call(control, "pool-ha-rebalance")
    assert answers[0] == {"progress": "web1: host2 -> host1 (home)"}
    assert control.moves == [("vm-web1", UUIDS[2], UUIDS[1])]
    assert result(answers) == "rebalanced: 1 VM(s) moved home"
    assert result(await call(control, "pool-ha-rebalance")) == "rebalanced: 0 VM(s) moved home"
    # a home that is down: the VM stays, and the answer says so
    control.powered["vm-web1"] = (Power.RUNNING, UUIDS[2])
    control.live = frozenset({UUIDS[0], UUIDS[2]})
    assert "away from home still: web1" in result(await call(control, "pool-ha-rebalance"))
    await refused(control, "pool-param-set", "ha-rebalance must be one of",
                  **{"other-config:ha-rebalance": "always"})


async def test_ha_disable_without_the_sr_disarms_every_live_host_with_no_record(
        control: FakeControl) -> None:
    control.database = None  # survival rule 2: no master, no database
    control.live = frozenset(UUIDS)
    await refused(control, "pool-ha-disable", "holds no pool database")  # not in rule 2
    control.in_rule2 = True
    answers = await call(control, "pool-ha-disable")
    assert answers[0]["progress"].startswith("the heartbeat SR is lost on every host")
    assert control.asked == [("ha-disarm", sorted(UUIDS))]
    assert "run pool-ha-disable again" in result(answers)
    assert control.master.db.ha == start().ha and control.sr == []  # nothing recorded
    control.answers[UUIDS[2]] = {"ha-disarm": "connection refused"}
    await refused(control, "pool-ha-disable", "1 host\\(s\\) did not disarm: "
                  f"{UUIDS[2]}; run host-emergency-ha-disable --force")


# ------------------------------------------------------------ emergency (local)
async def test_emergency_verbs_are_refused_while_ha_is_armed_here(
        control: FakeControl) -> None:
    control.is_armed = True
    await refused(control, "pool-emergency-reset-master", "refused while HA is armed",
                  **{"master-address": "10.9.0.2"})
    await refused(control, "pool-emergency-transition-to-master", "refused while HA is armed")
    await refused(control, "host-emergency-ha-disable", "needs --force")
    assert control.did == []
    assert result(await call(control, "host-emergency-ha-disable", "--force")).startswith(
        "HA disarmed on this host")
    assert control.did == ["emergency-disarm"]


async def test_transition_to_master_takes_the_database_and_turns_ha_off(
        control: FakeControl) -> None:
    await call(control, "pool-ha-enable", **{"ha-config:timeout": "30"})
    generation = control.master.db.ha.sr_generation
    control.database = None  # a host with HA off, not the master
    await refused(control, "pool-emergency-transition-to-master", "is not this host",
                  uuid=UUIDS[1])
    assert "now the master (HA off)" in result(
        await call(control, "pool-emergency-transition-to-master"))
    assert not control.master.db.ha.enabled and control.master.db.master == UUIDS[0]
    assert control.sr[-1] == (generation, False, control.master.db.generation)
    assert result(await call(control, "pool-emergency-reset-master",
                             **{"master-address": "10.9.0.2"})) == "following 10.9.0.2"


# ------------------------------------------------------------ joins and ejects
async def test_pool_join_takes_the_lowest_free_index_records_and_writes_the_table(
        control: FakeControl) -> None:
    answer = result(await call(control, "pool-admit", address="10.9.0.9:7000",
                               memory="4096", uuid="host-new", **{"name-label": "new"}))
    assert answer["index"] == 3 and answer["slots"] == 8 and answer["members_version"] == 1
    assert answer["hosts"][3] == ["10.9.0.9:7000"] and answer["hosts"][4] == []
    assert control.master.db.pool.host("host-new").memory_total == 4096
    table, freed = control.member_writes[-1]
    assert freed is None and table.by_uuid("host-new") is not None


@pytest.mark.parametrize(("params", "match"), [
    ({"address": "10.9.0.1:7000", "memory": "1024", "name-label": "dup"}, "share an address"),
    ({"address": "10.9.0.9:7000", "memory": "lots", "name-label": "x"}, "memory must be MiB"),
    ({"address": "10.9.0.9:7000", "memory": "1024", "name-label": "x", "uuid": UUIDS[1]},
     "already a member"),
])
async def test_a_refused_join_changes_nothing(control: FakeControl, params: dict[str, str],
                                              match: str) -> None:
    await refused(control, "pool-admit", match, **params)
    assert control.member_writes == []


async def test_a_member_refuses_pool_join_and_changes_nothing(control: FakeControl) -> None:
    before = control.master.db.pool
    await refused(control, "pool-join", "is a member of pool .* already",
                  **{"master-address": "10.9.0.1:7443"})
    assert control.master.db.pool == before and control.member_writes == []


@pytest.mark.parametrize("failure", [
    PoolError("could not write the member table: I/O deadline exceeded"),  # the plane's
    OSError("I/O error")])
async def test_a_join_whose_table_write_fails_is_undone(control: FakeControl,
                                                         failure: Exception) -> None:
    control.member_write_error = failure
    before = control.master.db.pool
    with pytest.raises(PoolError, match="could not write the member table"):
        await call(control, "pool-admit", address="10.9.0.9:7000", memory="1024",
                   uuid="host-new", **{"name-label": "new"})
    assert control.master.db.pool == before


async def test_pool_eject_moves_the_vms_asks_the_host_to_leave_and_frees_its_index(
        control: FakeControl) -> None:
    control.live = frozenset(UUIDS)
    left = asyncio.get_running_loop().call_later(0.3, lambda: setattr(
        control, "live", frozenset(UUIDS) - {UUIDS[1]}))
    answers = await call(control, "pool-eject", **{"host-uuid": UUIDS[1]})
    left.cancel()
    assert {source for _, source, _ in control.moves} == {UUIDS[1]}
    assert ("shutdown", [UUIDS[1]]) in control.asked
    table, freed = control.member_writes[-1]
    assert freed == 1 and table.by_uuid(UUIDS[1]) is None and table.version == 1
    assert UUIDS[1] not in {h.uuid for h in control.master.db.pool.hosts}
    assert "index 1 is free" in result(answers)


async def test_the_master_cannot_eject_itself(control: FakeControl) -> None:
    await refused(control, "pool-eject", "cannot eject itself", **{"host-uuid": UUIDS[0]})
    assert control.member_writes == [] and control.asked == []


async def test_ha_explain_filters_the_masters_evidence_by_host_and_time(
        control: FakeControl) -> None:
    control.evidence_records = [
        {"kind": "commit", "time": 100.0, "removed": [0], "liveset": [1, 2], "rule": "r"},
        {"kind": "restart", "time": 101.0, "vm": "sql", "to": "h1", "was_on": "h0",
         "why": "the restart plan"},
        {"kind": "commit", "time": 200.0, "removed": [2], "liveset": [1], "rule": "r"},
    ]
    result = (await call(control, "ha-explain"))[-1]["result"]
    assert [r["time"] for r in result["records"]] == [100.0, 101.0, 200.0]
    assert result["names"]["0"] == "host0"
    by_name = (await call(control, "ha-explain", host="host0"))[-1]["result"]["records"]
    assert [r["time"] for r in by_name] == [100.0, 101.0]  # its removal, its VM moved
    by_index = (await call(control, "ha-explain", host="2"))[-1]["result"]["records"]
    assert [r["time"] for r in by_index] == [200.0]
    recent = (await call(control, "ha-explain", since="150"))[-1]["result"]["records"]
    assert [r["time"] for r in recent] == [200.0]
    await refused(control, "ha-explain", "no host 'host9'", host="host9")
    await refused(control, "ha-explain", "since must be", since="yesterday")


async def test_pool_ha_margins_asks_every_live_host_and_checks_a_proposed_timeout(
        control: FakeControl) -> None:
    pool = control.master.db.pool
    first, second = pool.hosts[0].uuid, pool.hosts[1].uuid
    control.live = frozenset({first, second})
    control.answers = {first: {"margins": {"ok": True, "timeout": 3.0, "phase": "NORMAL",
                                           "rows": []}},
                       second: {"margins": "no answer within 5 s"}}
    result = (await call(control, "pool-ha-margins", timeout="20"))[-1]["result"]
    assert control.asked[-1] == ("margins", [first, second])
    assert result["timeout"] == 20.0
    assert [h.get("phase", h.get("error")) for h in result["hosts"]] == [
        "NORMAL", "no answer within 5 s"]
    for bad in ("nan", "-3", "0", "1e9", "soon"):
        await refused(control, "pool-ha-margins", "timeout=", timeout=bad)


async def lose_the_sr(control: FakeControl) -> None:
    """HA on, then the SR lost: disarmed in rule 2, the database did not reopen."""
    await call(control, "pool-ha-enable", **{"ha-config:timeout": "30"})
    control.database = None
    control.database_error = "could not open the pool database: short read at offset 0"
    control.asked.clear()


async def test_with_its_sr_lost_the_master_moves_the_pool_to_another(
        control: FakeControl) -> None:
    await lose_the_sr(control)
    with pytest.raises(PoolError, match=r"could not open the pool database on heartbeat SR "
                       r"heartbeat-sr \(could not open .*short read.*\): bring that SR back, "
                       r"or name another"):
        await call(control, "pool-ha-enable")
    control.answers[UUIDS[1]] = {"ping": {"ok": True, "armed": True}}
    with pytest.raises(PoolError, match="HA still runs on host1: pool-ha-disable first"):
        await call(control, "pool-ha-enable", **{"heartbeat-sr-uuids": "sr-b"})
    assert control.database is None and control.sr_moves == []

    control.answers.clear()
    before = control.master.db.generation
    answers = await call(control, "pool-ha-enable", **{"heartbeat-sr-uuids": "sr-b"})
    assert "recording the disable that could not be recorded without the heartbeat SR" in [
        a.get("progress") for a in answers]
    db = control.master.db
    assert db.ha.enabled and db.ha.heartbeat_sr == "sr-b" and control.sr_moves == ["sr-b"]
    assert db.generation == before + 2  # the disable recorded, then the enable
    assert control.requests["ha-arm"]["sr"] == "sr-b"


async def test_an_emergency_master_whose_sr_is_lost_says_how_to_move_the_pool(
        control: FakeControl) -> None:
    control.database = None
    control.open_error = OSError("short read of 0 bytes at offset 0")
    with pytest.raises(PoolError, match=r"short read.*this host now answers pool-ha-enable "
                       r"heartbeat-sr-uuids=UUID"):
        await call(control, "pool-emergency-transition-to-master")
    assert control.claimed == ["short read of 0 bytes at offset 0"]
    control.open_error = RolledBack("the SR's anchor says generation 9 was acknowledged")
    with pytest.raises(RolledBack):  # never bypassed by a move
        await call(control, "pool-emergency-transition-to-master")
    assert len(control.claimed) == 1


async def test_ha_enable_checks_the_sr_in_use_as_well(control: FakeControl) -> None:
    """No move asked: host2's node.toml points 'sr' at a volume of its own."""
    control.answers[UUIDS[2]] = {"sr-probe": {
        "ok": True, "path": "/srv/mine", "size": MIN_SIZE, "direct": True,
        "current_direct": True, "generation": 5, "state": "INVALID"}}
    await refused(control, "pool-ha-enable",
                  "heartbeat SR heartbeat-sr is not one volume shared by every host .*"
                  "host2: reads generation 5 at /srv/mine")
    assert not control.master.db.ha.enabled and "ha-arm" not in control.ops()
