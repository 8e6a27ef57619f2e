"""Redo log on real files through BlockDevice: round trip over many rollovers,
corrupt, torn, forged and garbage records, refusals, local backups, and no
acknowledged generation lost when a writer process is SIGKILLed at random
points. Every random source is seeded; failures print the seed."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from hacluster.storage.redolog import (
    HEAD,
    TAG,
    Loaded,
    RecordCorrupt,
    RedoLog,
    decode_record,
    encode_record,
    load_backup,
    record_size,
    save_backup,
)
from hacluster.storage.sr import BLOCK, DEFAULT_METADATA, HEARTBEAT_REGION, BlockDevice, format_sr

from ..conftest import load_tool

writer = load_tool("redolog_writer")
WRITER = Path(__file__).resolve().parents[2] / "tools" / "redolog_writer.py"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
START = 2 * BLOCK
GUARD = b"\xa5" * (2 * BLOCK)


def delta(generation: int) -> bytes:
    payload: bytes = writer.delta_payload(generation)
    return payload


def state(generation: int) -> bytes:
    payload: bytes = writer.snapshot_payload(generation)
    return payload


@dataclass(frozen=True)
class Region:
    """A metadata region in a file, between guard bytes that must never change."""

    path: Path
    size: int
    start: int = START

    def log(self, device: BlockDevice, key: bytes = KEY) -> RedoLog:
        return RedoLog(device, key, self.start, self.size)

    def half_start(self, half: int) -> int:
        return self.start + half * self.size // 2

    def image(self, device: BlockDevice) -> bytes:
        return device.read_blocks(self.start, self.size // BLOCK)

    def guards_intact(self) -> bool:
        data = self.path.read_bytes()
        return data[: self.start] == GUARD[: self.start] and data[self.start + self.size :] == GUARD


def make_region(tmp_path: Path, blocks_per_half: int, name: str = "metadata") -> Region:
    region = Region(tmp_path / name, 2 * blocks_per_half * BLOCK)
    region.path.write_bytes(GUARD[:START] + bytes(region.size) + GUARD)
    return region


class RecordingDevice(BlockDevice):
    """A BlockDevice that remembers every (offset, length) it read and wrote."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int]] = []

    def read(self, offset: int) -> bytes:
        self.reads.append((offset, BLOCK))
        return super().read(offset)

    def read_blocks(self, offset: int, count: int) -> bytes:
        self.reads.append((offset, count * BLOCK))
        return super().read_blocks(offset, count)

    def write_blocks(self, offset: int, data: bytes) -> None:
        self.writes.append((offset, len(data)))
        super().write_blocks(offset, data)


class PowerCut(Exception):
    """The simulated crash in the middle of a write."""


Tear = Callable[[int], range]


class TornDevice(BlockDevice):
    """A BlockDevice on which a multi-block write lands only the blocks ``tear`` picks."""

    def __init__(self, path: Path, tear: Tear) -> None:
        super().__init__(path)
        self.tear = tear

    def write_blocks(self, offset: int, data: bytes) -> None:
        for index in self.tear(len(data) // BLOCK):
            self.write(offset + index * BLOCK, data[index * BLOCK : (index + 1) * BLOCK])
        raise PowerCut


def first_blocks(landed: int, count: int) -> range:
    return range(min(landed, count - 1))


def last_blocks(landed: int, count: int) -> range:
    return range(max(count - landed, 1), count)


def every_other_block(count: int) -> range:
    return range(0, count - 1, 2)


TEARS: list[Tear] = [
    *(partial(first_blocks, landed) for landed in range(5)),
    *(partial(last_blocks, landed) for landed in range(1, 5)),
    every_other_block,
]


def flip_byte(device: BlockDevice, offset: int) -> None:
    block_start = offset - offset % BLOCK
    block = bytearray(device.read(block_start))
    block[offset % BLOCK] ^= 0xFF
    device.write(block_start, bytes(block))


def advance(log: RedoLog, first: int, last: int) -> None:
    for generation in range(first, last + 1):
        log.append(generation, delta(generation), partial(state, generation))


def fresh_load(region: Region, key: bytes = KEY) -> Loaded | None:
    with closing(BlockDevice(region.path)) as device:
        return region.log(device, key).load()


def assert_state(loaded: Loaded | None, generation: int, why: str = "") -> Loaded:
    """``loaded`` is exactly the state at ``generation`` the writer produced."""
    assert loaded is not None, f"nothing loaded, expected generation {generation}. {why}"
    assert loaded.generation == generation, f"loaded {loaded.generation}. {why}"
    assert_consistent(loaded, why)
    return loaded


def assert_consistent(loaded: Loaded, why: str = "") -> None:
    """The snapshot and consecutive deltas are the writer's bytes for their generations."""
    first = loaded.snapshot_generation
    assert loaded.generation == first + len(loaded.deltas), why
    assert loaded.snapshot == state(first), f"snapshot {first} has other bytes. {why}"
    expected = tuple(delta(g) for g in range(first + 1, loaded.generation + 1))
    assert loaded.deltas == expected, f"deltas {first + 1}..{loaded.generation} differ. {why}"


def written_log(region: Region, last: int) -> list[int]:
    """Snapshot 0 then deltas 1..last on ``region``; the offset of each record written."""
    with closing(RecordingDevice(region.path)) as device:
        log = region.log(device)
        log.write_snapshot(0, state(0))
        advance(log, 1, last)
        return [offset for offset, _ in device.writes]


# --- records ------------------------------------------------------------------------------


def test_records_are_whole_blocks_and_decode_back() -> None:
    for size in (0, 1, BLOCK - HEAD.size - TAG, BLOCK - HEAD.size - TAG + 1, 3 * BLOCK):
        record = encode_record("delta", 7, b"x" * size, KEY, previous=b"t" * TAG)
        assert len(record) == record_size(size) and len(record) % BLOCK == 0
        decoded = decode_record(record, KEY, previous=b"t" * TAG)
        assert (decoded.kind, decoded.generation, decoded.payload) == ("delta", 7, b"x" * size)
        with pytest.raises(RecordCorrupt, match="tag mismatch"):
            decode_record(record, KEY, previous=b"u" * TAG)
    with pytest.raises(RecordCorrupt, match="does not fit"):
        decode_record(encode_record("snapshot", 1, b"y" * 100, KEY)[: HEAD.size + 50], KEY)
    with pytest.raises(ValueError, match="kind"):
        encode_record("checkpoint", 1, b"", KEY)


# --- round trip ---------------------------------------------------------------------------


def test_round_trip_over_many_rollovers_and_a_new_writer_continues(tmp_path: Path) -> None:
    region = make_region(tmp_path, blocks_per_half=64)
    last = 400
    with closing(RecordingDevice(region.path)) as device:
        log = region.log(device)
        assert log.load() is None
        log.write_snapshot(0, state(0))
        for checkpoint in range(50, last + 1, 50):
            advance(log, checkpoint - 49, checkpoint)
            assert_state(fresh_load(region), checkpoint, f"after appending to {checkpoint}")
        snapshot_writes = [offset for offset, _ in device.writes
                           if offset in (region.half_start(0), region.half_start(1))]
    assert snapshot_writes.count(region.half_start(0)) >= 3, snapshot_writes
    assert snapshot_writes.count(region.half_start(1)) >= 3, snapshot_writes
    with closing(BlockDevice(region.path)) as device:
        log = region.log(device)
        assert_state(log.load(), last)
        advance(log, last + 1, last + 30)
    loaded = assert_state(fresh_load(region), last + 30, "after a new writer continued")
    assert loaded.skipped == ()
    assert region.guards_intact()


def test_default_region_follows_the_heartbeat_region_of_a_formatted_sr(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.sr"
    format_sr(path, hosts=4, key=KEY, generation=3)
    with closing(RecordingDevice(path)) as device:
        before = device.read_blocks(0, HEARTBEAT_REGION // BLOCK)
        log = RedoLog(device, KEY)
        log.write_snapshot(0, state(0))
        advance(log, 1, 20)
        assert_state(log.load(), 20)
        assert device.read_blocks(0, HEARTBEAT_REGION // BLOCK) == before
        assert all(HEARTBEAT_REGION <= offset < HEARTBEAT_REGION + DEFAULT_METADATA
                   for offset, _ in device.writes)


# --- corrupt, stale, torn, forged and garbage records -----------------------------------------


def test_a_corrupt_newest_delta_is_skipped_with_a_note_then_overwritten(tmp_path: Path) -> None:
    region = make_region(tmp_path, blocks_per_half=64)
    written_log(region, 30)
    with closing(RecordingDevice(region.path)) as device:
        log = region.log(device)
        log.load()
        advance(log, 31, 31)
        [(newest, _)] = device.writes
        flip_byte(device, newest + HEAD.size + 3)
    loaded = assert_state(fresh_load(region), 30, "the corrupt delta 31 must be skipped")
    assert any("rejected" in note and "tag mismatch" in note for note in loaded.skipped), loaded
    with closing(BlockDevice(region.path)) as device:
        log = region.log(device)
        log.load()
        advance(log, 31, 35)
    assert assert_state(fresh_load(region), 35).skipped == ()


def test_a_corrupt_newest_snapshot_falls_back_to_the_other_half(tmp_path: Path) -> None:
    region = make_region(tmp_path, blocks_per_half=64)
    with closing(RecordingDevice(region.path)) as device:
        log = region.log(device)
        log.write_snapshot(0, state(0))
        generation = 0
        while len(device.writes) < 2 or device.writes[-1][0] not in (
                region.half_start(0), region.half_start(1)):
            generation += 1
            advance(log, generation, generation)
        rolled_over_at, newest_half_start = generation, device.writes[-1][0]
        advance(log, generation + 1, generation + 5)
        flip_byte(device, newest_half_start + HEAD.size + 10)
    loaded = assert_state(fresh_load(region), rolled_over_at - 1,
                          "the other half holds everything before the rollover")
    assert any("snapshot rejected" in note for note in loaded.skipped), loaded
    with closing(BlockDevice(region.path)) as device:
        log = region.log(device)
        log.load()
        advance(log, rolled_over_at, rolled_over_at + 60)
    assert_state(fresh_load(region), rolled_over_at + 60, "the writer goes on after a fallback")


def test_leftovers_of_an_abandoned_history_never_replay(tmp_path: Path) -> None:
    # Delta 10 is corrupt, so 11..20 behind it are lost. Rewriting delta 10 with the
    # same payload puts it at the same place, right before the old delta 11, whose
    # generation fits: only the tag chain (and the nonce) keep it out.
    region = make_region(tmp_path, blocks_per_half=64)
    offsets = written_log(region, 20)
    assert len(set(offsets)) == 21, "no rollover: deltas 1..20 follow snapshot 0"
    with closing(BlockDevice(region.path)) as device:
        flip_byte(device, offsets[10] + HEAD.size + 1)
    assert_state(fresh_load(region), 9)
    with closing(BlockDevice(region.path)) as device:
        log = region.log(device)
        log.load()
        advance(log, 10, 10)
    assert_state(fresh_load(region), 10, "old deltas 11..20 must not follow the new delta 10")


def test_a_write_torn_at_any_block_keeps_the_last_acknowledged_state(tmp_path: Path) -> None:
    region = make_region(tmp_path, blocks_per_half=10)
    rollovers = 0
    with closing(BlockDevice(region.path)) as device:
        log = region.log(device)
        log.write_snapshot(0, state(0))
        for generation in range(1, 31):
            image = region.image(device)
            for number, tear in enumerate(TEARS):
                with closing(TornDevice(region.path, tear)) as torn:
                    crashing = region.log(torn)
                    crashing.load()
                    with pytest.raises(PowerCut):
                        advance(crashing, generation, generation)
                why = f"append {generation} torn by pattern {number}"
                assert_state(fresh_load(region), generation - 1, why)
                with closing(BlockDevice(region.path)) as recovering:
                    log_after_crash = region.log(recovering)
                    log_after_crash.load()
                    advance(log_after_crash, generation, generation)
                assert_state(fresh_load(region), generation, f"recovery after {why}")
                device.write_blocks(region.start, image)
            advance(log, generation, generation)
            rollovers += assert_state(log.load(), generation).snapshot_generation == generation
    assert rollovers >= 4, "the torn writes must include rollover snapshots"


def test_a_zeroed_region_loads_nothing(tmp_path: Path) -> None:
    region = make_region(tmp_path, blocks_per_half=64)
    written_log(region, 100)
    with closing(BlockDevice(region.path)) as device:
        device.write_blocks(region.start, bytes(region.size))
        log = region.log(device)
        assert log.load() is None
        with pytest.raises(ValueError, match="append before"):
            advance(log, 101, 101)


def test_garbage_never_crashes_nor_reads_outside_the_region(tmp_path: Path) -> None:
    seed = 20240611
    rng = random.Random(seed)
    region = make_region(tmp_path, blocks_per_half=16)
    written_log(region, 60)
    huge = HEAD.pack(b"HARL", 1, 2, 61, 2**63, bytes(16))
    with closing(RecordingDevice(region.path)) as device:
        good = region.image(device)
        log = region.log(device)
        true_generation = assert_state(log.load(), 60).generation
        for trial in range(150):
            why = f"seed {seed}, trial {trial}"
            damaged = bytearray(good)
            if trial == 0:
                damaged[:] = rng.randbytes(len(damaged))
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(0, len(damaged), BLOCK if trial % 3 else 1)
                patch = huge if trial % 2 else rng.randbytes(rng.choice((1, 8, BLOCK)))
                damaged[at : at + len(patch)] = patch
            device.write_blocks(region.start, bytes(damaged[: region.size]))
            device.reads.clear()
            loaded = log.load()
            assert all(region.start <= offset and offset + length <= region.start + region.size
                       for offset, length in device.reads), why
            if loaded is not None:
                assert loaded.generation <= true_generation, why
                assert_consistent(loaded, why)
    assert region.guards_intact()


def test_records_under_another_key_are_rejected(tmp_path: Path) -> None:
    region = make_region(tmp_path, blocks_per_half=64)
    written_log(region, 40)
    assert fresh_load(region, OTHER_KEY) is None
    with closing(BlockDevice(region.path)) as device:
        with pytest.raises(RecordCorrupt, match="tag mismatch"):
            decode_record(device.read_blocks(region.start, 2), OTHER_KEY)
        assert decode_record(device.read_blocks(region.start, 2), KEY).kind == "snapshot"


# --- refusals -----------------------------------------------------------------------------


def test_refused_calls_write_nothing(tmp_path: Path) -> None:
    region = make_region(tmp_path, blocks_per_half=16)
    written_log(region, 25)
    before = region.path.read_bytes()
    with closing(BlockDevice(region.path)) as device:
        log = region.log(device)
        with pytest.raises(ValueError, match="append before load"):
            advance(log, 26, 26)
        assert log.load() is not None
        for wrong in (25, 27, 0):
            with pytest.raises(ValueError, match=f"{wrong} is not the next one"):
                log.append(wrong, delta(wrong), partial(state, wrong))
        with pytest.raises(ValueError, match="older than"):
            log.write_snapshot(24, state(24))
        with pytest.raises(ValueError, match="enlarge the metadata region"):
            log.write_snapshot(26, bytes(region.size // 2))
        with pytest.raises(ValueError, match="enlarge the metadata region"):
            log.append(26, bytes(region.size // 2), lambda: bytes(region.size // 2))
    assert region.path.read_bytes() == before
    with closing(BlockDevice(region.path)) as device, pytest.raises(ValueError, match="older"):
        region.log(device).write_snapshot(3, state(3))  # loads first, even unasked
    assert region.path.read_bytes() == before


# --- local backups ------------------------------------------------------------------------


def test_backup_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "pool.db.backup"
    assert load_backup(path, KEY) is None
    save_backup(path, 41, state(41), KEY)
    save_backup(path, 42, state(42), KEY)
    assert load_backup(path, KEY) == (42, state(42))
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name], "no temporary file left"


def test_corrupt_or_foreign_backups_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "pool.db.backup"
    save_backup(path, 42, state(42), KEY)
    with pytest.raises(RecordCorrupt, match="tag mismatch"):
        load_backup(path, OTHER_KEY)
    data = bytearray(path.read_bytes())
    data[HEAD.size + 5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(RecordCorrupt, match="tag mismatch"):
        load_backup(path, KEY)
    path.write_bytes(encode_record("snapshot", 42, state(42), KEY)[:100])
    with pytest.raises(RecordCorrupt, match="does not fit"):
        load_backup(path, KEY)
    path.write_bytes(encode_record("delta", 42, b"", KEY))
    with pytest.raises(RecordCorrupt, match="not a snapshot"):
        load_backup(path, KEY)


# --- durability under SIGKILL -------------------------------------------------------------


ACKS_FIRST = 40  # generations a writer acknowledges, at least, before its kill


@dataclass(frozen=True)
class Round:
    loaded: int | None
    acks: list[int]
    killed: bool


def run_writer_until_killed(region: Region, key_file: Path, acks_first: int, delay: float,
                            errors: Path) -> Round:
    """Start a writer, let it acknowledge ``acks_first`` generations, SIGKILL it
    ``delay`` s later (anywhere in a write), return what it acknowledged. Counting
    acks, not seconds, keeps each round's work the same on a loaded machine."""
    command = [sys.executable, str(WRITER), str(region.path), "--key-file", str(key_file),
               "--start", str(region.start), "--size", str(region.size), "--deltas", "20000",
               "--pause-every", "4"]
    with errors.open("ab") as stderr, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr) as process:
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        early = [process.stdout.readline().decode() for _ in range(acks_first)]
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        output = "".join(early) + process.stdout.read().decode()
        code = process.wait()
    assert first.startswith("loaded ") and code in (0, -signal.SIGKILL), errors.read_text()
    complete = output.split("\n")[:-1]  # a line cut by the kill has no newline: not an ack
    acks = [int(line.removeprefix("ack ")) for line in complete]
    loaded = first.split()[1]
    return Round(None if loaded == "none" else int(loaded), acks, code == -signal.SIGKILL)


@pytest.mark.parametrize("seed", [7, 1_000_003])
def test_sigkill_at_random_points_loses_no_acknowledged_generation(
        tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    region = make_region(tmp_path, blocks_per_half=24)
    key_file = tmp_path / "pool.key"
    key_file.write_bytes(KEY)
    acknowledged, killed, total = -1, 0, 0
    for number in range(8):
        why = f"seed {seed}, round {number}, last acknowledged {acknowledged}"
        done = run_writer_until_killed(region, key_file, rng.randint(ACKS_FIRST, 3 * ACKS_FIRST),
                                       rng.uniform(0.0, 0.03), tmp_path / "writer.err")
        loaded = -1 if done.loaded is None else done.loaded
        assert loaded >= acknowledged, f"writer loaded generation {loaded}: lost. {why}"
        expected = list(range(loaded + 1, loaded + 1 + len(done.acks)))
        assert done.acks == expected, f"acks not consecutive from {loaded + 1}. {why}"
        acknowledged = max(acknowledged, *done.acks, loaded)
        killed += done.killed
        total += len(done.acks)
    final = fresh_load(region)
    assert final is not None and final.generation >= acknowledged, (
        f"seed {seed}: loaded {final and final.generation} < acknowledged {acknowledged}")
    assert_consistent(final, f"seed {seed}")
    assert killed >= 6 and total >= 8 * ACKS_FIRST, f"seed {seed}: {killed} kills, {total} acks"
