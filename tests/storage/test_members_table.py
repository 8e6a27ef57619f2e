"""The member table on a real SR file (O_DIRECT where the filesystem allows)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.storage.members import (
    TABLE_BLOCKS,
    TABLE_OFFSETS,
    Member,
    MembersError,
    MemberTable,
    read_table,
    write_table,
)
from hacluster.storage.sr import BLOCK, BlockDevice, format_sr
from hacluster.wire.codec import new_pool_key
from hacluster.wire.keys import KeyRing

GENERATION = 77


def table(version: int = 1, capacity: int = 8) -> MemberTable:
    members = tuple(Member(i, f"uuid-{i}", f"h{i}", (f"127.0.0.{i + 1}:7000",))
                    for i in range(3))
    return MemberTable(GENERATION, version, capacity, members)


@pytest.fixture
def sr(tmp_path: Path) -> Iterator[tuple[BlockDevice, bytes]]:
    key = new_pool_key()
    format_sr(tmp_path / "sr", 8, key, GENERATION, metadata=BLOCK * 16)
    device = BlockDevice(tmp_path / "sr")
    yield device, key
    device.close()


def test_a_fresh_sr_has_no_table(sr: tuple[BlockDevice, bytes]) -> None:
    device, key = sr
    assert read_table(device, key, GENERATION) is None


def test_join_then_eject_round_trip_through_the_sr(sr: tuple[BlockDevice, bytes]) -> None:
    device, key = sr
    first = table()
    write_table(device, first, key)
    assert read_table(device, key, GENERATION) == first
    grown = first.joined("uuid-new", "new", ("127.0.0.9:7000",))
    assert grown.version == 2 and grown.by_uuid("uuid-new") == Member(
        3, "uuid-new", "new", ("127.0.0.9:7000",))
    write_table(device, grown, key)
    shrunk = grown.ejected("uuid-1")
    write_table(device, shrunk, key)
    assert read_table(device, key, GENERATION) == shrunk
    again = shrunk.joined("uuid-other", "other", ("127.0.0.10:7000",))
    assert again.by_uuid("uuid-other") == Member(1, "uuid-other", "other",
                                                 ("127.0.0.10:7000",)), "lowest free index"


def test_a_damaged_newer_copy_leaves_the_previous_version(
    sr: tuple[BlockDevice, bytes],
) -> None:
    device, key = sr
    write_table(device, table(1), key)
    data = bytearray(table(2).encode(key))
    data[40] ^= 1
    device.write_blocks(TABLE_OFFSETS[0], bytes(data))
    assert read_table(device, key, GENERATION) == table(1)
    write_table(device, table(2), key)
    assert read_table(device, key, GENERATION) == table(2)
    assert len(data) == TABLE_BLOCKS * BLOCK


def test_other_keys_generations_and_garbage_are_not_a_table(
    sr: tuple[BlockDevice, bytes],
) -> None:
    device, key = sr
    write_table(device, table(1), new_pool_key())
    assert read_table(device, key, GENERATION) is None
    write_table(device, table(1), key)
    assert read_table(device, key, GENERATION + 1) is None
    device.write_blocks(TABLE_OFFSETS[1], b"HAMT\x01\xff\xff\xff\xff".ljust(BLOCK * 16, b"x"))
    assert read_table(device, key, GENERATION) is None
    ring = KeyRing(new_pool_key(), next=key)
    write_table(device, table(1), key)
    assert read_table(device, ring, GENERATION) == table(1), "a rotation's old key still reads"


def test_bad_tables_and_changes_are_refused_with_the_reason() -> None:
    with pytest.raises(MembersError, match="share an index"):
        MemberTable(1, 1, 8, (Member(0, "a", "a", ("1.1.1.1:1",)),
                              Member(0, "b", "b", ("1.1.1.2:1",))))
    with pytest.raises(MembersError, match="share an address"):
        MemberTable(1, 1, 8, (Member(0, "a", "a", ("1.1.1.1:1",)),
                              Member(1, "b", "b", ("1.1.1.1:1",))))
    with pytest.raises(MembersError, match="outside"):
        MemberTable(1, 1, 2, (Member(2, "a", "a", ("1.1.1.1:1",)),))
    full = table(capacity=3)
    with pytest.raises(MembersError, match="no free slot"):
        full.joined("x", "x", ("1.2.3.4:1",))
    with pytest.raises(MembersError, match="already a member"):
        full.joined("uuid-0", "x", ("1.2.3.4:1",))
    with pytest.raises(MembersError, match="not a member"):
        full.ejected("nobody")
    lone = MemberTable(1, 1, 2, (Member(0, "a", "a", ("1.1.1.1:1",)),))
    with pytest.raises(MembersError, match="last member"):
        lone.ejected("a")
