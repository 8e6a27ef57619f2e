"""Heartbeat SR on a real file: layout, O_DIRECT block I/O, corrupted and forged slots."""

from __future__ import annotations

from pathlib import Path

import pytest

from hacluster.core.events import SlotCorrupt
from hacluster.core.messages import Phase, Report
from hacluster.storage.sr import (
    BLOCK,
    EMPTY_BLOCK,
    HEARTBEAT_REGION,
    BlockDevice,
    GlobalBlock,
    PoolState,
    SRError,
    decode_slot,
    encode_slot,
    format_sr,
    slot_offset,
)
from hacluster.wire.codec import Sealer, new_pool_key

KEY = new_pool_key()
SEALER = Sealer.for_slots(KEY, 8)


def report(sender: int, seq: int) -> Report:
    everyone = frozenset(range(8))
    return Report(generation=9, sender=sender, boot=1, seq=seq, phase=Phase.NORMAL,
                  liveset=everyone, hbdomain=everyone, sfdomain=everyone,
                  statefile_access=True, hb_age_ms=(5,) * 8, sf_age_ms=(7,) * 8)


@pytest.fixture
def sr(tmp_path: Path) -> Path:
    path = tmp_path / "heartbeat.sr"
    format_sr(path, hosts=8, key=KEY, generation=9, metadata=BLOCK * 16)
    return path


def test_format_lays_out_global_block_and_empty_slots(sr: Path) -> None:
    assert sr.stat().st_size == HEARTBEAT_REGION + BLOCK * 16
    device = BlockDevice(sr)
    try:
        header = GlobalBlock.decode(device.read(0), KEY)
        assert header == GlobalBlock(9, PoolState.INIT, None, 8)
        assert all(device.read(slot_offset(i)) == EMPTY_BLOCK for i in range(8))
    finally:
        device.close()


def test_slots_round_trip_through_the_volume_with_o_direct(sr: Path) -> None:
    writer, reader = BlockDevice(sr), BlockDevice(sr)
    try:
        assert writer.direct, "ext4 and tmpfs accept O_DIRECT here"
        for host in (0, 3, 7):
            writer.write(slot_offset(host), encode_slot(SEALER, report(host, 41)))
        for host in (0, 3, 7):
            assert decode_slot(SEALER, reader.read(slot_offset(host)), host) == report(host, 41)
        assert decode_slot(SEALER, reader.read(slot_offset(1)), 1) is None
    finally:
        writer.close()
        reader.close()


@pytest.mark.parametrize("where", [0, 5, 40, 200])
def test_a_damaged_slot_is_corrupt_never_a_crash(where: int) -> None:
    block = bytearray(encode_slot(SEALER, report(2, 1)))
    block[where] ^= 0x5A
    assert isinstance(decode_slot(SEALER, bytes(block), 2), SlotCorrupt)


def test_garbage_slot_is_corrupt() -> None:
    assert isinstance(decode_slot(SEALER, b"\xff" * BLOCK, 1), SlotCorrupt)


def test_forged_writer_is_rejected() -> None:
    forged = encode_slot(Sealer.for_slots(new_pool_key(), 8), report(2, 1))
    found = decode_slot(SEALER, forged, 2)
    assert isinstance(found, SlotCorrupt) and "authentication" in found.reason
    misplaced = encode_slot(SEALER, report(3, 1))
    found = decode_slot(SEALER, misplaced, 2)
    assert isinstance(found, SlotCorrupt) and "written by host 3" in found.reason


def test_global_block_of_another_pool_is_refused(sr: Path) -> None:
    device = BlockDevice(sr)
    try:
        with pytest.raises(SRError, match="not authenticated"):
            GlobalBlock.decode(device.read(0), new_pool_key())
        device.write(0, EMPTY_BLOCK)
        with pytest.raises(SRError, match="bad magic"):
            GlobalBlock.decode(device.read(0), KEY)
    finally:
        device.close()


def test_bad_format_requests_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SRError, match="1 to"):
        format_sr(tmp_path / "x", hosts=0, key=KEY, generation=1)
    with pytest.raises(SRError, match="multiple"):
        format_sr(tmp_path / "y", hosts=3, key=KEY, generation=1, metadata=100)
    format_sr(tmp_path / "z", hosts=3, key=KEY, generation=1, metadata=0)
    device = BlockDevice(tmp_path / "z")
    try:
        with pytest.raises(ValueError, match="whole"):
            device.write(0, b"short")
    finally:
        device.close()
