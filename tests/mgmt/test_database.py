"""The pool database service on a real SR file: durable commits, newest copy wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from hacluster.core.pool import PoolError
from hacluster.core.pooldb import PoolDB
from hacluster.lab.workloads import default_pool
from hacluster.mgmt.database import Database, snapshot_bytes
from hacluster.model.pooldata import seed, to_data
from hacluster.storage.sr import BLOCK, HEARTBEAT_REGION, format_sr
from hacluster.wire.codec import new_pool_key

KEY = new_pool_key()


@pytest.fixture
def sr(tmp_path: Path) -> Path:
    path = tmp_path / "heartbeat.sr"
    format_sr(path, 3, KEY, 1, metadata=BLOCK * 64)
    return path


def start() -> PoolDB:
    return seed(default_pool(3))


def order(n: int) -> dict[str, object]:
    return {"op": "vm-set", "vm": "vm-sql", "fields": {"order": str(n)}}


async def test_a_fresh_pool_is_seeded_and_commits_survive_a_new_master(sr: Path,
                                                                        tmp_path: Path) -> None:
    first = await Database.open(sr, tmp_path / "a.backup", KEY, start())
    assert "seeded from the pool file" in " ".join(first.notes)
    for n in range(1, 40):  # enough to roll the small log over between its halves
        await first.commit(order(n))
    first.close()
    second = await Database.open(sr, tmp_path / "b.backup", KEY, start())  # another host
    assert "from the SR redo log" in second.notes[-1]
    assert second.db.generation == 40 and second.db.pool.vm("vm-sql").order == 39
    second.close()


async def test_a_refused_change_writes_nothing(sr: Path, tmp_path: Path) -> None:
    database = await Database.open(sr, tmp_path / "a.backup", KEY, start())
    await database.commit(order(1))
    before = sr.read_bytes(), (tmp_path / "a.backup").read_bytes()
    with pytest.raises(PoolError, match="whole number"):
        await database.commit(order(-1))
    with pytest.raises(PoolError, match="no VM"):
        await database.commit({"op": "vm-set", "vm": "vm-x", "fields": {"order": "1"}})
    assert (sr.read_bytes(), (tmp_path / "a.backup").read_bytes()) == before
    assert database.db.generation == 2
    database.close()


async def test_the_newest_copy_wins_and_bad_copies_are_skipped(sr: Path,
                                                             tmp_path: Path) -> None:
    backup = tmp_path / "a.backup"
    database = await Database.open(sr, backup, KEY, start())
    for n in range(1, 6):
        await database.commit(order(n))
    newest = database.db
    database.close()
    with sr.open("r+b") as volume:  # the redo log is lost
        volume.seek(HEARTBEAT_REGION)
        volume.write(bytes(BLOCK * 64))
    other = await Database.open(sr, tmp_path / "b.backup", KEY, start(), [
        ("host1's backup", snapshot_bytes(newest)), ("host2's backup", b"\x93garbage")])
    assert to_data(other.db) == to_data(newest)
    assert any("host2's backup skipped" in note for note in other.notes)
    assert "host1's backup" in other.notes[-1]
    await other.commit(order(9))  # and the log holds it again, after a fresh snapshot
    other.close()
    again = await Database.open(sr, tmp_path / "c.backup", KEY, start())
    assert again.db.generation == newest.generation + 1
    again.close()
    backup.write_bytes(b"not a backup")
    third = await Database.open(sr, backup, KEY, start())
    assert any("local backup skipped" in note for note in third.notes)
    assert third.db.generation == newest.generation + 1
    third.close()


async def test_a_moved_database_lives_on_the_new_sr_and_the_old_keeps_what_it_held(
        sr: Path, tmp_path: Path) -> None:
    """A new master that reads only the new SR (no backups) finds every change,
    the move's snapshot included; the old SR stays a generation behind."""
    other = tmp_path / "other.sr"
    format_sr(other, 3, KEY, 2, metadata=BLOCK * 64)
    database = await Database.open(sr, tmp_path / "a.backup", KEY, start())
    await database.commit(order(1))
    await database.move(other)
    await database.commit(order(2))
    database.close()

    moved = await Database.open(other, tmp_path / "none.backup", KEY, start())
    assert moved.db.generation == 3 and moved.warnings == []  # anchored there as well
    assert moved.db.pool.vm("vm-sql").order == 2
    moved.close()
    left = await Database.open(sr, tmp_path / "none2.backup", KEY, start())
    assert left.db.generation == 2 and left.db.pool.vm("vm-sql").order == 1
    left.close()


async def test_a_move_that_fails_keeps_the_database_where_it_was(sr: Path,
                                                                  tmp_path: Path) -> None:
    database = await Database.open(sr, tmp_path / "a.backup", KEY, start())
    with pytest.raises(OSError):
        await database.move(tmp_path / "nowhere.sr")
    ahead = tmp_path / "ahead.sr"  # holds a newer history of this pool: never overwritten
    format_sr(ahead, 3, KEY, 2, metadata=BLOCK * 64)
    newer = await Database.open(ahead, tmp_path / "b.backup", KEY, start())
    for n in range(1, 4):
        await newer.commit(order(n))
    newer.close()
    with pytest.raises(ValueError, match="older"):
        await database.move(ahead)
    await database.commit(order(9))  # still on the first SR
    database.close()
    again = await Database.open(sr, tmp_path / "none.backup", KEY, start())
    assert again.db.pool.vm("vm-sql").order == 9
    again.close()
