"""The pool database when the master's local disk fails under a commit.

The change is in the SR's redo log before the local backup is written: when
the backup then fails, the commit is not acknowledged (it raises the
OSError), yet the change is in force, as a new master would load it, and
the database takes the next change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hacluster.mgmt.database import Database
from hacluster.storage.redolog import load_backup

from ..fakes import KEY, open_database, start


def order(vm: str, n: int) -> dict[str, object]:
    return {"op": "vm-set", "vm": vm, "fields": {"order": str(n)}}


async def test_a_failed_local_backup_leaves_the_database_in_step_with_its_redo_log(
        tmp_path: Path) -> None:
    database = await open_database(tmp_path)
    seen: list[int] = []
    database.listeners.append(lambda db: seen.append(db.generation))
    backup = database.backup
    database.backup = tmp_path / "gone" / "pooldb.backup"  # the local disk fails
    with pytest.raises(OSError):
        await database.commit(order("vm-sql", 7))
    assert database.db.generation == 2 and database.db.pool.vm("vm-sql").order == 7
    assert seen == [2]  # in force: the master's duties and the other hosts hear of it
    database.backup = backup  # the disk is back
    new = await database.commit(order("vm-web1", 5))
    assert new.generation == 3 and seen == [2, 3]
    found = load_backup(backup, KEY)
    assert found is not None and found[0] == 3
    database.close()
    again = await Database.open(tmp_path / "heartbeat.sr", tmp_path / "other.backup", KEY,
                                start())  # a new master, from the redo log
    assert again.db == new
    again.close()
