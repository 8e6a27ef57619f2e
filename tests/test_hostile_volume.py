"""A hostile or damaged shared volume: replayed slots, a rolled-back redo log, a failing backup.

The attacker can write the heartbeat SR (the LUN is shared) but has no pool
key: it can only zero blocks and write back old, genuine ones. Everything
here runs on real SR files through the real sealing, redo-log and database
code; the liveness cores are the real :class:`HostCore`, driven on a
simulated clock, and the management planes run in loop time (looptime):
deterministic, no wall-clock assertions.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from hacluster.core.events import (
    Fence,
    HeartbeatReceived,
    Input,
    LivesetCommitted,
    Output,
    ReadSlots,
    SendHeartbeat,
    SlotsRead,
    SlotWritten,
    Tick,
    Wakeup,
    WriteSlot,
)
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.pool import PoolError
from hacluster.core.timing import Timing
from hacluster.mgmt.database import Database, RolledBack
from hacluster.node.plane import REOPEN_INTERVAL, ROLLBACK_ALERT
from hacluster.sim.checker import restart_bound
from hacluster.storage.redolog import HEAD, MAGIC, load_backup
from hacluster.storage.sr import (
    ANCHOR_OFFSETS,
    BLOCK,
    HEARTBEAT_REGION,
    BlockDevice,
    decode_slot,
    encode_slot,
    format_sr,
    slot_offset,
)
from hacluster.wire.codec import Sealer, new_pool_key

from . import fakes
from .conftest import LOOPTIME
from .node.test_plane import Pool

KEY = new_pool_key()
GENERATION = 12
T = 5.0
LATENCY = 0.002  # one way, network and volume alike


class VolumePool:
    """Real cores of a statefile-mode pool whose slots live in a real SR file."""

    def __init__(self, sr: Path, hosts: int = 3) -> None:
        self.device = BlockDevice(sr)
        self.sealer = Sealer.for_slots(KEY, hosts)
        self.hosts = hosts
        config = CoreConfig(Timing.derive(T), hosts, GENERATION)
        everyone = frozenset(range(hosts))
        self.cores = {i: HostCore(config, i, boot=1, now=0.0, liveset=everyone)
                      for i in range(hosts)}
        self.timing = config.timing
        self.queue: list[tuple[float, int, int, Input]] = []
        self.order = itertools.count()
        self.wakeups: dict[int, float] = {}
        self.commits: list[tuple[float, int, LivesetCommitted]] = []
        self.fenced: list[int] = []
        self.now = 0.0
        for host in self.cores:
            self.wakeups[host] = 0.0
            self._push(0.0, host, Tick(0.0))

    def crash(self, host: int) -> None:
        del self.cores[host]

    def run_until(self, end: float, every: float = math.inf,
                  action: Callable[[], None] = lambda: None) -> None:
        """Deliver everything due before ``end``; call ``action()`` every ``every`` s."""
        next_action = self.now if every < math.inf else end
        while self.queue and self.queue[0][0] < end:
            if self.queue[0][0] >= next_action:
                self.now = next_action
                action()
                next_action += every
                continue
            at, _, host, event = heapq.heappop(self.queue)
            self.now = at
            core = self.cores.get(host)
            if core is None or (isinstance(event, Tick) and self.wakeups.get(host) != at):
                continue
            self._carry_out(host, core.handle(event))

    def _push(self, at: float, host: int, event: Input) -> None:
        heapq.heappush(self.queue, (at, next(self.order), host, event))

    def _carry_out(self, host: int, outputs: list[Output]) -> None:
        now = self.now
        for output in outputs:
            if isinstance(output, SendHeartbeat):
                for peer in output.to:
                    if peer != host:
                        self._push(now + LATENCY, peer,
                                   HeartbeatReceived(now + LATENCY, output.report))
            elif isinstance(output, WriteSlot):
                block = encode_slot(self.sealer, output.report)
                self.device.write(slot_offset(output.report.sender), block)
                self._push(now + LATENCY, host, SlotWritten(now + LATENCY, True))
            elif isinstance(output, ReadSlots):
                slots = {i: decode_slot(self.sealer, self.device.read(slot_offset(i)), i)
                         for i in range(self.hosts)}
                self._push(now + LATENCY, host, SlotsRead(now + LATENCY, slots))
            elif isinstance(output, LivesetCommitted):
                self.commits.append((now, host, output))
            elif isinstance(output, Fence):
                self.fenced.append(host)
                del self.cores[host]
                return
            elif isinstance(output, Wakeup):
                self.wakeups[host] = output.at
                self._push(output.at, host, Tick(output.at))

    def close(self) -> None:
        self.device.close()


def test_replayed_old_slot_images_do_not_keep_a_crashed_host_alive(tmp_path: Path) -> None:
    """Two older, genuinely sealed images of a crashed host's slot, written back in
    turn by someone with write access and no key, must not delay the failover."""
    sr = tmp_path / "heartbeat.sr"
    format_sr(sr, hosts=3, key=KEY, generation=GENERATION, metadata=BLOCK * 16)
    pool = VolumePool(sr)
    attacker = BlockDevice(sr)
    try:
        images = []
        for at in (3 * T, 3 * T + 1.0):  # the attacker copies host 2's slot twice
            pool.run_until(at)
            images.append(attacker.read(slot_offset(2)))
        assert images[0] != images[1]
        pool.run_until(4 * T)
        assert pool.commits == [] and pool.fenced == []  # a healthy pool so far
        crashed_at = pool.now
        pool.crash(2)
        replays = itertools.cycle(images)
        pool.run_until(crashed_at + 4 * T, every=pool.timing.t2,
                       action=lambda: attacker.write(slot_offset(2), next(replays)))
        removed = [(at, host) for at, host, c in pool.commits if c.removed == {2}]
        assert sorted(host for _, host in removed) == [0, 1], pool.commits
        bound = restart_bound(pool.timing)
        assert all(at - crashed_at <= bound for at, _ in removed), (removed, bound)
        assert pool.fenced == []
        for host in (0, 1):
            assert pool.cores[host].counters.stale > 0  # the replays were seen and dropped
    finally:
        attacker.close()
        pool.close()


# ------------------------------------------------------------ the redo log rolled back
METADATA = BLOCK * 64  # fakes.make_sr: two halves of 32 blocks


def vm_order(n: int) -> dict[str, object]:
    return {"op": "vm-set", "vm": "vm-sql", "fields": {"order": str(n)}}


async def committed_to(directory: Path, generation: int) -> Database:
    """The master's database on a fresh SR, with changes acknowledged up to ``generation``."""
    database = await fakes.open_database(directory)
    while database.db.generation < generation:
        await database.commit(vm_order(database.db.generation))
    return database


def records(sr: Path) -> dict[tuple[str, int], int]:
    """Where each record of the redo log starts: (kind, generation) -> SR offset."""
    found = {}
    with sr.open("rb") as volume:
        for offset in range(HEARTBEAT_REGION, HEARTBEAT_REGION + METADATA, BLOCK):
            volume.seek(offset)
            magic, _, kind, generation, _, _ = HEAD.unpack(volume.read(HEAD.size))
            if magic == MAGIC:
                found[({1: "snapshot", 2: "delta"}[kind], generation)] = offset
    return found


def metadata_region(sr: Path) -> bytes:
    with sr.open("rb") as volume:
        volume.seek(HEARTBEAT_REGION)
        return volume.read(METADATA)


def write_back(sr: Path, offset: int, data: bytes) -> None:
    """The attacker's write: plain bytes onto the shared volume, no key."""
    with sr.open("r+b") as volume:
        volume.seek(offset)
        volume.write(data)


def zero_one_delta_block(sr: Path, acked: int) -> int:
    write_back(sr, records(sr)[("delta", acked - 4)], bytes(BLOCK))
    return acked - 5


async def old_metadata_region_written_back(sr: Path, database: Database, acked: int) -> int:
    old = metadata_region(sr)
    while database.db.generation < acked:
        await database.commit(vm_order(database.db.generation))
    write_back(sr, HEARTBEAT_REGION, old)
    return acked // 2


def zero_the_active_halfs_first_block(sr: Path, acked: int) -> int:
    """The log rolled over at generation 33 into half 1: its snapshot goes."""
    assert ("snapshot", 33) in records(sr) and ("delta", 32) in records(sr)
    write_back(sr, records(sr)[("snapshot", 33)], bytes(BLOCK))
    return 32


async def rolled_back(directory: Path, attack: str) -> tuple[Database, int, int]:
    """The master acknowledged generation ``acked``; the attack leaves the log at ``older``."""
    sr = directory / "heartbeat.sr"
    if attack == "zeroed delta block":
        database = await committed_to(directory, acked := 10)
        older = zero_one_delta_block(sr, acked)
    elif attack == "old metadata region written back":
        database = await committed_to(directory, 10)
        older = await old_metadata_region_written_back(sr, database, acked := 20)
    else:
        database = await committed_to(directory, acked := 36)
        older = zero_the_active_halfs_first_block(sr, acked)
    database.close()
    return database, acked, older


ATTACKS = ["zeroed delta block", "old metadata region written back",
           "zeroed first block of the active half"]


@pytest.mark.parametrize("attack", ATTACKS)
async def test_a_rolled_back_redo_log_is_refused_when_no_newer_copy_answers(
        tmp_path: Path, attack: str) -> None:
    """Before the anchor the new master loaded the older generation without a word
    (10 -> 5, 20 -> 10, 36 -> 32): every change acknowledged since was lost."""
    _, acked, older = await rolled_back(tmp_path, attack)
    sr = tmp_path / "heartbeat.sr"
    region = metadata_region(sr)
    with pytest.raises(RolledBack, match=f"anchor says generation {acked} was acknowledged, "
                       f"but the newest copy found is generation {older}"):
        await Database.open(sr, tmp_path / "new-master.backup", fakes.KEY, fakes.start())
    assert metadata_region(sr) == region  # refusing wrote nothing
    assert not (tmp_path / "new-master.backup").exists()
    for offset in ANCHOR_OFFSETS:  # the operator accepts the loss (docs/operations.md)
        write_back(sr, offset, bytes(BLOCK))
    accepted = await Database.open(sr, tmp_path / "new-master.backup", fakes.KEY, fakes.start())
    assert accepted.db.generation == older
    assert [w.split(":")[0] for w in accepted.warnings] == [
        f"the SR holds no database anchor although its redo log holds generation {older}"]
    accepted.close()


async def test_torn_writes_of_the_anchor_or_an_unacknowledged_record_are_no_rollback(
        tmp_path: Path) -> None:
    """The anchor never runs ahead of the log, and its copies alternate: a write
    torn by a crash leaves a state the loader takes without refusing."""
    database = await committed_to(tmp_path, 10)
    database.close()
    sr = tmp_path / "heartbeat.sr"
    rng = random.Random(12)
    write_back(sr, ANCHOR_OFFSETS[10 % 2], rng.randbytes(BLOCK))  # anchoring 10, torn
    write_back(sr, records(sr)[("delta", 10)] + BLOCK, rng.randbytes(BLOCK))  # delta 11, torn
    again = await Database.open(sr, tmp_path / "new-master.backup", fakes.KEY, fakes.start())
    assert again.db.generation == 10 and again.warnings == []
    assert "database anchor copy 0 not trusted: bad magic" in again.notes
    again.close()


@pytest.mark.parametrize("attack", ATTACKS)
async def test_a_rolled_back_redo_log_is_repaired_from_a_newer_backup_with_a_warning(
        tmp_path: Path, attack: str) -> None:
    """A host's backup that answers holds the acknowledged state: it is loaded,
    written back into the log, and the damage is reported (an alert)."""
    database, acked, older = await rolled_back(tmp_path, attack)
    found = load_backup(database.backup, fakes.KEY)
    assert found is not None and found[0] == acked
    again = await Database.open(tmp_path / "heartbeat.sr", tmp_path / "new-master.backup",
                                fakes.KEY, fakes.start(), [("the backup of host-2", found[1])])
    try:
        assert again.db.generation == acked
        assert again.warnings == [f"the SR redo log holds generation {older}, older than the "
                                  f"backup of host-2 (generation {acked}): it was rolled back "
                                  f"or damaged; loaded generation {acked} and rewrote it into "
                                  "the log"]
    finally:
        again.close()
    third = await Database.open(tmp_path / "heartbeat.sr", tmp_path / "third.backup",
                                fakes.KEY, fakes.start())
    assert third.db.generation == acked and third.warnings == []  # the log holds it again
    third.close()


async def until(check: Callable[[], bool], limit: float = 10 * REOPEN_INTERVAL) -> None:
    """Loop time passes until ``check()`` holds (at most ``limit`` seconds of it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, "not within the limit of loop time"
        await asyncio.sleep(0.1)


@LOOPTIME
async def test_a_new_master_refuses_a_rollback_with_an_alert_until_a_backup_answers(
        tmp_path: Path) -> None:
    """Planes of three hosts on one SR: host 0 acknowledges changes host 1 does
    not hear of, then dies; the log is rolled back and host 2 is down. Host 1,
    master now, must not serve the older state: it alerts, serves nothing, and
    loads the acknowledged state once host 2's backup answers."""
    pool = Pool(tmp_path)
    try:
        old, new, witness = pool.planes
        old.master_gained()
        await pool.settle()
        database = old.database
        assert database is not None
        del pool.net.hosts[new.me]  # host 1 hears no more backups
        for n in range(8):
            await database.commit(vm_order(n))
            await pool.settle()  # each pushed to host 2's backup
        acked = database.db.generation
        assert witness.known.generation == acked and new.known.generation < acked
        old.master_lost()  # host 0 dies
        del pool.net.hosts[old.me], pool.net.hosts[witness.me]  # host 2 is down
        pool.net.hosts[new.me] = new.agent_request
        sr = tmp_path / "heartbeat.sr"
        write_back(sr, records(sr)[("delta", acked - 1)], bytes(BLOCK))
        new.master_gained()
        await until(lambda: bool(pool.nodes[1].records.events("alert")))
        assert new.database is None and not new.is_master()  # nothing older is served
        [alert] = pool.nodes[1].records.events("alert")
        assert alert["name"] == ROLLBACK_ALERT and f"generation {acked} was" in alert["body"]
        assert "refusing to load the pool database" in new.last_error
        await asyncio.sleep(3 * REOPEN_INTERVAL)
        assert new.database is None
        assert pool.nodes[1].records.events("alert") == [alert]  # raised once
        pool.net.hosts[witness.me] = witness.agent_request  # host 2 is back
        await until(lambda: new.database is not None)
        await pool.settle()
        assert new.database is not None
        assert new.last_error == f"backup not pushed to {[old.me]}"  # host 0 is still dead
        assert new.database.db.master == new.me
        assert new.database.db.pool.vm("vm-sql").order == 7  # the last acknowledged change
        names = [m.name for m in new.database.db.messages]
        assert names == [ROLLBACK_ALERT, ROLLBACK_ALERT]  # the refusal, then the repair
    finally:
        for node in pool.nodes:
            node.tasks.cancel_all()  # a master still asking for a newer copy
        await pool.settle()
        pool.close()


# ------------------------------------------------------------ a failing backup disk
async def test_a_failing_backup_disk_refuses_the_change_and_the_next_one_works(
        tmp_path: Path) -> None:
    """Before: the redo log took the change, the backup failed, and every later
    commit failed with 'delta generation N is not the next one' until a restart."""
    database = await committed_to(tmp_path, 3)
    backups = tmp_path / "backups"
    backups.mkdir()
    database.backup = backups / "pooldb.backup"
    await database.commit(vm_order(30))
    backups.rename(tmp_path / "unplugged")
    backups.write_bytes(b"")  # the disk's mount point is no directory now
    with pytest.raises(PoolError, match="change refused, nothing changed"):
        await database.commit(vm_order(40))
    assert database.db.generation == 4 and database.db.pool.vm("vm-sql").order == 30
    backups.unlink()
    (tmp_path / "unplugged").rename(backups)  # the disk is back
    new = await database.commit(vm_order(50))
    assert new.generation == 5 and new.pool.vm("vm-sql").order == 50
    found = load_backup(database.backup, fakes.KEY)
    assert found is not None and found[0] == 5
    database.close()
    again = await Database.open(tmp_path / "heartbeat.sr", tmp_path / "other.backup",
                                fakes.KEY, fakes.start())
    assert again.db == new and again.warnings == []  # the refused change is nowhere
    again.close()
