"""The pool database's redo log in the heartbeat SR's metadata region (spec sections 2 and 7).

Rules:

* The region (``size`` bytes from ``start``, whole blocks) is two equal
  halves. Each half holds one snapshot record at its start, then delta
  records, each starting on a block boundary. A snapshot is always written to
  the half that is not active, which then becomes the active one: a torn
  snapshot write never destroys the last good state, which stays whole in the
  other half.
* A record is ``b"HARL" | version(1) | kind(1) | generation(u64) | payload
  length(u64) | nonce(16) | payload | tag(32)``, zero padded to whole blocks
  (the padding is neither covered nor checked). The tag is HMAC-SHA256 with
  the pool key's derived key for the redo log (:mod:`hacluster.wire.keys`,
  ``Purpose.REDO_LOG``), over the previous record's tag (nothing for a snapshot) and every
  byte before the tag. It catches torn writes and corruption, stops anyone who
  can write the LUN but lacks the pool key from forging the database, and
  chains each delta to the record before it: leftovers of an earlier use of a
  half, or of a history abandoned after a corrupt record, never replay even
  when their generation would fit. The random nonce makes every tag unique,
  even for a record rewritten with the same content. Records are tagged with a
  key ring's current key and verified with either of its keys (a key
  rotation: :meth:`RedoLog.rekey`, :func:`reseal_backup`).
* ``load()`` decodes both halves' snapshots and replays each valid one's
  deltas while each decodes, chains to its predecessor and has generation
  exactly previous + 1. The half that reaches the highest generation wins
  (ties: the newer snapshot); when the newer half's snapshot is corrupt that
  is the other half. Corrupt records are skipped and noted in
  :attr:`Loaded.skipped`, never a crash. A block that lacks the magic, or a
  record of another kind or generation, ends a replay silently: it is the
  end of the log or a leftover. A payload length is checked against the
  space left in the half before anything more is read, so garbage never makes
  a read leave the region or allocate a huge buffer.
* A record counts as written (the caller may acknowledge the change) only
  once ``write_snapshot`` or ``append`` has returned: all its blocks went out
  in one ``O_DSYNC`` write and are on the medium. A write that fails is taken
  back: its first block is zeroed, so the record can never load, and
  :class:`NotWritten` says the change is not in the log; when zeroing fails
  too, the plain OSError says the record may have landed.
* Generations never go back, and nothing is written when a call is refused
  (``ValueError``): a snapshot older than the log's state, a delta that is not
  exactly the next generation, ``append`` before ``load`` or
  ``write_snapshot``, a record larger than a half. ``write_snapshot`` before
  ``load`` loads first, so it never overwrites the newest state.
* A host's local backup is one snapshot record in a file, replaced atomically
  (temporary file in the same directory, fsync, rename, fsync of the
  directory); :func:`stage_backup` does the first half, so a caller learns
  that the local disk fails before it writes anything else.
* Synchronous and not thread-safe: one writer (the master, holding the master
  lock) per region, run off the event loop by the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from hacluster.storage.files import StagedFile
from hacluster.storage.sr import (
    BLOCK,
    DEFAULT_METADATA,
    EMPTY_BLOCK,
    HEARTBEAT_REGION,
    BlockDevice,
)
from hacluster.wire.keys import KeyRing, Keys, Purpose, as_ring

MAGIC = b"HARL"
VERSION = 1
NONCE = 16
TAG = 32
HEAD = struct.Struct(">4sBBQQ16s")  # magic, version, kind, generation, payload length, nonce
KINDS = {"snapshot": 1, "delta": 2}
KIND_NAMES = {code: name for name, code in KINDS.items()}
NO_PREVIOUS = b""
MAX_GENERATION = 2**64 - 1


class RecordCorrupt(ValueError):
    """A record that must not be trusted, and why."""


class NotWritten(OSError):
    """A record write that failed and was taken back: it is not in the log."""


class _NotARecord(RecordCorrupt):
    """No record starts here (no magic): the end of a log or a leftover, not damage."""


@dataclass(frozen=True)
class Loaded:
    """The newest state: a snapshot and deltas ``snapshot_generation + 1 .. generation``."""

    generation: int
    snapshot_generation: int
    snapshot: bytes
    deltas: tuple[bytes, ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class Record:
    kind: str
    generation: int
    payload: bytes
    tag: bytes

    @property
    def size(self) -> int:
        """Bytes the record takes on the medium, padding included."""
        return record_size(len(self.payload))


@dataclass(frozen=True)
class _Header:
    kind: str
    generation: int
    length: int


@dataclass(frozen=True)
class _Position:
    """The active half, where its next record goes, and the record it must chain to."""

    half: int
    tail: int
    generation: int
    tag: bytes


@dataclass(frozen=True)
class _Replay:
    loaded: Loaded
    position: _Position


def record_size(payload_length: int) -> int:
    """Whole blocks, in bytes, of a record carrying ``payload_length`` bytes."""
    blocks = -(-(HEAD.size + payload_length + TAG) // BLOCK)
    return blocks * BLOCK


def _tag(record_key: bytes, previous: bytes, body: bytes) -> bytes:
    return hmac.new(record_key, previous + body, hashlib.sha256).digest()


def encode_record(kind: str, generation: int, payload: bytes, key: Keys, *,
                  previous: bytes = NO_PREVIOUS) -> bytes:
    """A record as whole blocks; a delta chains to ``previous``, its predecessor's tag."""
    if kind not in KINDS:
        raise ValueError(f"record kind must be one of {sorted(KINDS)}, not {kind!r}")
    if not 0 <= generation <= MAX_GENERATION:
        raise ValueError(f"generation {generation} outside 0..{MAX_GENERATION}")
    head = HEAD.pack(MAGIC, VERSION, KINDS[kind], generation, len(payload), os.urandom(NONCE))
    body = head + payload
    tag = _tag(as_ring(key).sealing(Purpose.REDO_LOG), previous, body)
    return (body + tag).ljust(record_size(len(payload)), b"\0")


def _parse_header(data: bytes, room: int) -> _Header:
    """The header at the start of ``data``, its record bounded by ``room`` bytes."""
    if len(data) < HEAD.size:
        raise RecordCorrupt("shorter than a record header")
    magic, version, code, generation, length, _nonce = HEAD.unpack_from(data)
    if magic != MAGIC:
        raise _NotARecord("bad magic")
    if version != VERSION:
        raise RecordCorrupt(f"unsupported record version {version}")
    if code not in KIND_NAMES:
        raise RecordCorrupt(f"unknown record kind {code}")
    if HEAD.size + length + TAG > room:
        raise RecordCorrupt(f"payload length {length} does not fit the {room} bytes available")
    return _Header(KIND_NAMES[code], generation, length)


def decode_record(data: bytes, key: Keys, *, previous: bytes = NO_PREVIOUS) -> Record:
    """The record at the start of ``data`` (padding may follow), authenticated with
    either key of ``key``."""
    header = _parse_header(data, len(data))
    end = HEAD.size + header.length
    tag = data[end : end + TAG]

    def verify(record_key: bytes) -> None:
        if not hmac.compare_digest(tag, _tag(record_key, previous, data[:end])):
            raise RecordCorrupt(f"{header.kind} {header.generation}: authentication tag "
                                "mismatch (torn write, corruption, another key or another "
                                "history)")
    as_ring(key).open_with(Purpose.REDO_LOG, verify, RecordCorrupt)
    return Record(header.kind, header.generation, data[HEAD.size : end], tag)


def _tag_of(record: bytes) -> bytes:
    end = HEAD.size + HEAD.unpack_from(record)[4]
    return record[end : end + TAG]


class RedoLog:
    """Double-buffered snapshots plus chained deltas in one metadata region."""

    def __init__(self, device: BlockDevice, key: Keys, start: int = HEARTBEAT_REGION,
                 size: int = DEFAULT_METADATA) -> None:
        if start < 0 or start % BLOCK:
            raise ValueError(f"the region must start on a {BLOCK}-byte block boundary")
        if size < 2 * BLOCK or size % (2 * BLOCK):
            raise ValueError(f"the region must be an even number (>= 2) of {BLOCK}-byte blocks")
        available = os.lseek(device.fd, 0, os.SEEK_END)
        if available < start + size:
            raise ValueError(f"{device.path} has {available} bytes; the region ends at "
                             f"{start + size}")
        self._device = device
        self._key: KeyRing = as_ring(key)
        self._start = start
        self._half_size = size // 2
        self._position: _Position | None = None
        self._loaded = False

    def rekey(self, keys: KeyRing) -> None:
        """Tag new records with ``keys``' current key, verify with either of its keys."""
        self._key = keys

    def load(self) -> Loaded | None:
        """The newest state, or None on a fresh region; the writer continues after it."""
        notes: list[str] = []
        replays = [r for r in (self._replay(half, notes) for half in (0, 1)) if r is not None]
        self._loaded = True
        if not replays:
            self._position = None
            return None
        best = max(replays, key=lambda r: (r.loaded.generation, r.loaded.snapshot_generation))
        self._position = best.position
        return replace(best.loaded, skipped=(*notes, *best.loaded.skipped))

    def write_snapshot(self, generation: int, payload: bytes) -> None:
        """Write the full state at ``generation`` into the inactive half, which becomes active."""
        if not self._loaded:
            self.load()
        here = self._position
        if here is not None and generation < here.generation:
            raise ValueError(f"snapshot generation {generation} is older than the log's "
                             f"generation {here.generation}")
        record = encode_record("snapshot", generation, payload, self._key)
        half = 0 if here is None else 1 - here.half
        self._write(half, 0, record)
        self._position = _Position(half, len(record), generation, _tag_of(record))

    def append(self, generation: int, delta: bytes, snapshot: Callable[[], bytes]) -> None:
        """Write delta ``generation``, or ``snapshot()`` (the state at it) when the half is full."""
        here = self._position
        if here is None:
            raise ValueError("append before load() or write_snapshot(): the log has no state "
                             "to continue")
        if generation != here.generation + 1:
            raise ValueError(f"delta generation {generation} is not the next one: the log is at "
                             f"generation {here.generation}")
        record = encode_record("delta", generation, delta, self._key, previous=here.tag)
        if here.tail + len(record) > self._half_size:
            self.write_snapshot(generation, snapshot())
            return
        self._write(here.half, here.tail, record)
        self._position = _Position(here.half, here.tail + len(record), generation,
                                   _tag_of(record))

    def _write(self, half: int, offset: int, record: bytes) -> None:
        if offset + len(record) > self._half_size:
            raise ValueError(f"a record of {len(record)} bytes does not fit a half of "
                             f"{self._half_size} bytes: enlarge the metadata region")
        where = self._half_start(half) + offset
        try:
            self._device.write_blocks(where, record)
        except OSError as error:
            self._device.write(where, EMPTY_BLOCK)  # raises if the medium refuses this too
            raise NotWritten(f"redo log write failed and was taken back: {error}") from error

    def _half_start(self, half: int) -> int:
        return self._start + half * self._half_size

    def _replay(self, half: int, notes: list[str]) -> _Replay | None:
        snapshot = self._snapshot_of(half, notes)
        if snapshot is None:
            return None
        deltas: list[bytes] = []
        skipped: list[str] = []
        last, tail = snapshot, snapshot.size
        while (delta := self._delta_after(half, tail, last, skipped)) is not None:
            deltas.append(delta.payload)
            last, tail = delta, tail + delta.size
        loaded = Loaded(last.generation, snapshot.generation, snapshot.payload, tuple(deltas),
                        tuple(skipped))
        return _Replay(loaded, _Position(half, tail, last.generation, last.tag))

    def _snapshot_of(self, half: int, notes: list[str]) -> Record | None:
        first = self._device.read(self._half_start(half))
        if first == EMPTY_BLOCK:
            return None
        try:
            header = _parse_header(first, self._half_size)
            if header.kind != "snapshot":
                raise RecordCorrupt(f"a {header.kind} record where the snapshot belongs")
            return self._whole_record(half, 0, first, header, NO_PREVIOUS)
        except RecordCorrupt as error:
            notes.append(f"half {half}: snapshot rejected: {error}")
            return None

    def _delta_after(self, half: int, tail: int, last: Record,
                     notes: list[str]) -> Record | None:
        if tail >= self._half_size:
            return None
        first = self._device.read(self._half_start(half) + tail)
        try:
            header = _parse_header(first, self._half_size - tail)
            if header.kind != "delta" or header.generation != last.generation + 1:
                return None
            return self._whole_record(half, tail, first, header, last.tag)
        except _NotARecord:
            return None
        except RecordCorrupt as error:
            notes.append(f"half {half}, block {tail // BLOCK}: delta after generation "
                         f"{last.generation} rejected: {error}")
            return None

    def _whole_record(self, half: int, offset: int, first: bytes, header: _Header,
                      previous: bytes) -> Record:
        blocks = record_size(header.length) // BLOCK
        position = self._half_start(half) + offset
        rest = self._device.read_blocks(position + BLOCK, blocks - 1) if blocks > 1 else b""
        return decode_record(first + rest, self._key, previous=previous)


def stage_backup(path: Path, generation: int, payload: bytes, key: Keys) -> StagedFile:
    """The local backup of the state at ``generation``, written and fsynced beside
    ``path`` (OSError when the disk fails); ``install()`` puts it in place."""
    return StagedFile(path, encode_record("snapshot", generation, payload, key))


def save_backup(path: Path, generation: int, payload: bytes, key: Keys) -> None:
    """Replace the local backup at ``path`` atomically with the state at ``generation``."""
    stage_backup(path, generation, payload, key).install()


def load_backup(path: Path, key: Keys) -> tuple[int, bytes] | None:
    """The (generation, payload) of the local backup, None if there is none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        record = decode_record(data, key)
    except RecordCorrupt as error:
        raise RecordCorrupt(f"backup {path}: {error}") from error
    if record.kind != "snapshot":
        raise RecordCorrupt(f"backup {path} holds a {record.kind} record, not a snapshot")
    return record.generation, record.payload


def reseal_backup(path: Path, keys: KeyRing) -> int | None:
    """The local backup at ``path`` (opened with either key) saved again under the
    current key; its generation, None if there is none."""
    found = load_backup(path, keys)
    if found is not None:
        save_backup(path, found[0], found[1], keys)
    return None if found is None else found[0]
