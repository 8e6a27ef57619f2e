"""pool-key-rotate through three hosts' planes on one SR (the master's verb, the hosts'
agent ops, a real pool database): what every host holds and what still opens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hacluster.core.pool import PoolError
from hacluster.mgmt.database import Database
from hacluster.mgmt.verbs import Call
from hacluster.storage.redolog import RecordCorrupt, load_backup
from hacluster.storage.sr import BlockDevice, GlobalBlock, SRError
from hacluster.wire.keys import KeyRing

from ..conftest import LOOPTIME
from ..fakes import KEY, Fault, start
from .test_plane import Pool, master_of

pytestmark = LOOPTIME


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Pool]:
    planes = Pool(tmp_path)
    try:
        await master_of(planes, 0)
        yield planes
    finally:
        await planes.settle()
        planes.close()


async def rotate(pool: Pool) -> list[dict[str, Any]]:
    return [out async for out in pool.planes[0].answer(Call("pool-key-rotate"))]


def header(pool: Pool, keys: bytes | KeyRing) -> GlobalBlock:
    device = BlockDevice(pool.nodes[0].config.sr)
    try:
        return GlobalBlock.decode(device.read(0), keys)
    finally:
        device.close()


async def test_every_host_ends_with_the_same_new_key_and_the_old_opens_nothing(
        pool: Pool) -> None:
    database = pool.planes[0].database
    assert database is not None
    await database.commit({"op": "pool-set", "fields": {"name-label": "before"}})
    await pool.settle()
    answers = await rotate(pool)
    assert answers[-1]["ok"] and "rotated on 3 host(s)" in answers[-1]["result"]
    rings = {node.keys for node in pool.nodes}
    assert len(rings) == 1
    ring = rings.pop()
    assert ring.other is None and ring.current != KEY
    assert pool.nodes[0].storage.keys == ring
    new = ring.current
    assert header(pool, new).generation == 1
    with pytest.raises(SRError):
        header(pool, KEY)
    for plane in pool.planes:  # every backup saved again under the new key
        assert load_backup(plane.backup_path, new) is not None
        with pytest.raises(RecordCorrupt):
            load_backup(plane.backup_path, KEY)
    # a new master loads the database (redo log, anchor) with the new key alone
    reopened = await Database.open(pool.nodes[0].config.sr, Path("/nonexistent/backup"),
                                   new, start())
    try:
        assert not reopened.warnings
        assert reopened.db.generation == database.db.generation > 1
        assert reopened.snapshot == database.snapshot
    finally:
        reopened.close()


async def test_a_host_that_cannot_accept_leaves_nothing_changed(pool: Pool) -> None:
    pool.net.faults.append(Fault("key-accept", "drop"))
    with pytest.raises(PoolError, match="nothing changed"):
        await rotate(pool)
    assert [node.keys for node in pool.nodes] == [KeyRing(KEY)] * 3
    assert header(pool, KEY).generation == 1


async def test_a_switch_not_acknowledged_keeps_both_keys_and_a_rerun_finishes(
        pool: Pool) -> None:
    pool.net.faults.append(Fault("key-switch", "drop"))
    with pytest.raises(PoolError, match="still opens both keys"):
        await rotate(pool)
    assert all(len(node.keys.keys) == 2 for node in pool.nodes)  # nothing fences
    pending = pool.nodes[0].keys.current
    answers = await rotate(pool)
    assert "finishing the rotation" in str(answers) and answers[-1]["ok"]
    rings = {node.keys for node in pool.nodes}
    assert len(rings) == 1 and rings.pop().current not in (KEY, pending)
