"""The pool database's anchor: the newest generation the master wrote, outside the redo log.

Rules:

* The anchor lives in the last two blocks of the SR's heartbeat region
  (:data:`~hacluster.storage.sr.ANCHOR_OFFSETS`), apart from the redo log,
  so damage to the log (a zeroed delta block, an old copy of the metadata
  region written back, a zeroed snapshot) leaves it standing.
* A copy is ``b"HAAN" | version(1) | generation(u64) | hmac-sha256`` zero
  padded to a block, MACed with the redo log's derived key
  (``Purpose.REDO_LOG``; the magic keeps a record and an anchor apart): a
  writer without the pool key cannot forge one. Written with a key ring's
  current key, trusted under either of its keys.
* Generation ``g`` goes to copy ``g % 2``, so a torn write leaves the other
  copy whole; the anchor is the greatest generation of a copy that
  verifies. A copy that does not verify is noted, never trusted, never a
  crash. Two blank copies: no anchor (a fresh SR, one formatted before
  anchors existed, or both zeroed).
* The master writes the anchor after the redo log took a change and before it
  acknowledges it, so the anchor never names a generation the log does not
  durably hold: a torn write (of the log or the anchor) never makes a loader
  refuse the newest state.
* What it cannot catch alone: old genuine anchor copies written back together
  with old log blocks (a replay of the whole SR). Hosts' local backups catch
  that when they answer; see docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from hacluster.storage.sr import ANCHOR_OFFSETS, BLOCK, EMPTY_BLOCK, BlockDevice
from hacluster.wire.keys import Keys, Purpose, as_ring

MAGIC = b"HAAN"
VERSION = 1
BODY = struct.Struct(">4sBQ")  # magic, version, generation
TAG = 32


@dataclass(frozen=True)
class Anchor:
    """The newest generation a valid copy names (None: no anchor), and notes on bad copies."""

    generation: int | None
    notes: tuple[str, ...] = ()


def _tag(derived: bytes, body: bytes) -> bytes:
    return hmac.new(derived, body, hashlib.sha256).digest()


def encode_anchor(generation: int, key: Keys) -> bytes:
    body = BODY.pack(MAGIC, VERSION, generation)
    return (body + _tag(as_ring(key).sealing(Purpose.REDO_LOG), body)).ljust(BLOCK, b"\0")


def decode_anchor(block: bytes, key: Keys) -> int:
    """The generation a copy names; ValueError saying why it is not trusted."""
    body, tag = block[: BODY.size], block[BODY.size : BODY.size + TAG]
    magic, version, generation = BODY.unpack(body)
    if magic != MAGIC:
        raise ValueError("bad magic")
    if version != VERSION:
        raise ValueError(f"unsupported anchor version {version}")
    def verify(derived: bytes) -> None:
        if not hmac.compare_digest(tag, _tag(derived, body)):
            raise ValueError("authentication tag mismatch (torn write, corruption or another "
                             "key)")
    as_ring(key).open_with(Purpose.REDO_LOG, verify, ValueError)
    return int(generation)


def read_anchor(device: BlockDevice, key: Keys) -> Anchor:
    """The anchor on the SR behind ``device`` (OSError if the blocks cannot be read)."""
    found: list[int] = []
    notes: list[str] = []
    for copy, offset in enumerate(ANCHOR_OFFSETS):
        block = device.read(offset)
        if block == EMPTY_BLOCK:
            continue
        try:
            found.append(decode_anchor(block, key))
        except ValueError as error:
            notes.append(f"database anchor copy {copy} not trusted: {error}")
    return Anchor(max(found, default=None), tuple(notes))


def write_anchor(device: BlockDevice, key: Keys, generation: int) -> None:
    """Anchor ``generation``: its copy (``generation % 2``) is on the medium on return."""
    device.write(ANCHOR_OFFSETS[generation % len(ANCHOR_OFFSETS)],
                 encode_anchor(generation, key))
