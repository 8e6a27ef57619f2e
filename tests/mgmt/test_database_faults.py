"""The pool database when the master's local disk fails under a commit.

The local backup is staged before the redo log is touched: when the disk
fails there, the change is refused and nothing of it is in force. When the
backup cannot be put in place after the redo log took the change, the commit
is not acknowledged (it raises the OSError), yet the change is in force, as
a new master would load it. Either way the database takes the next change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hacluster.core.pool import PoolError
from hacluster.mgmt.database import Database
from hacluster.storage.redolog import load_backup

from ..fakes import KEY, open_database, start


def order(vm: str, n: int) -> dict[str, object]:
    return {"op": "vm-set", "vm": vm, "fields": {"order": str(n)}}


async def test_a_local_backup_that_cannot_be_written_refuses_the_change(
        tmp_path: Path) -> None:
    database = await open_database(tmp_path)
    seen: list[int] = []
    database.listeners.append(lambda db: seen.append(db.generation))
    backup = database.backup
    database.backup = tmp_path / "gone" / "pooldb.backup"  # the local disk fails
    with pytest.raises(PoolError, match="change refused, nothing changed: this host's local "
                       "backup cannot be written"):
        await database.commit(order("vm-sql", 7))
    assert database.db.generation == 1 and seen == []  # not in force anywhere
    database.backup = backup  # the disk is back
    new = await database.commit(order("vm-web1", 5))
    assert new.generation == 2 and seen == [2] and new.pool.vm("vm-sql").order != 7
    found = load_backup(backup, KEY)
    assert found is not None and found[0] == 2
    database.close()
    again = await Database.open(tmp_path / "heartbeat.sr", tmp_path / "other.backup", KEY,
                                start())  # a new master, from the redo log
    assert again.db == new and again.warnings == []
    again.close()


async def test_a_backup_not_put_in_place_after_the_log_took_the_change_is_in_force(
        tmp_path: Path) -> None:
    database = await open_database(tmp_path)
    seen: list[int] = []
    database.listeners.append(lambda db: seen.append(db.generation))
    database.backup.unlink()
    (database.backup / "in-the-way").mkdir(parents=True)  # the rename over it fails
    with pytest.raises(OSError):
        await database.commit(order("vm-sql", 7))
    assert database.db.generation == 2 and database.db.pool.vm("vm-sql").order == 7
    assert seen == [2]  # in force: the master's duties and the other hosts hear of it
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    (database.backup / "in-the-way").rmdir()
    database.backup.rmdir()
    new = await database.commit(order("vm-web1", 5))
    assert new.generation == 3 and seen == [2, 3]
    found = load_backup(database.backup, KEY)
    assert found is not None and found[0] == 3
    database.close()
    again = await Database.open(tmp_path / "heartbeat.sr", tmp_path / "other.backup", KEY,
                                start())  # a new master, from the redo log
    assert again.db == new
    again.close()
