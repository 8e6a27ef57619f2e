"""Heartbeat SR layout and whole-block I/O (spec section 2).

Rules:

* The volume starts with a 4 MiB heartbeat region of 4096-byte blocks: block 0
  is the global block, block ``1 + i`` is host ``i``'s slot (up to 989
  hosts), then the pool's member table in two copies of 16 blocks
  (:mod:`hacluster.storage.members`), and the last two blocks
  (:data:`ANCHOR_OFFSETS`) hold the pool database's anchor
  (:mod:`hacluster.storage.anchor`). The metadata region
  (for the pool database's redo log) follows.
* Every read and write is one whole aligned block, through a page-aligned
  buffer, with ``O_DIRECT`` where the medium accepts it (``direct`` says
  whether it did, so the daemon can log it).
* A slot block is ``b"HASL" | length(2) | sealed report | crc32(4)``, zero
  padded; the seal authenticates the writer with the pool key's slot key (a
  :class:`~hacluster.wire.codec.Sealer` for ``Purpose.SLOT``: a heartbeat
  packet copied into a slot does not open), the CRC catches
  torn writes cheaply. An all-zero block is a slot never written. Anything else
  (bad magic, length, checksum, non-zero padding, seal, or a writer other than
  the slot's host) is :class:`SlotCorrupt`: not seen, never a crash.
* The global block ``b"HASR" | version | msgpack fields | hmac-sha256`` holds
  the generation, pool state, master and host count, authenticated with the
  pool key's SR header key (``Purpose.SR_HEADER``), never the raw pool key:
  MACed with a key ring's current key, verified with either of its keys;
  :func:`reseal_header` rewrites it under the current key (a key rotation).
* A pool has at most :func:`max_pool_hosts` hosts: the most whose worst-case
  report (:func:`~hacluster.wire.codec.worst_case_report`) still fits a slot.
  The node's configuration and :func:`format_sr` refuse larger pools with it.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from pathlib import Path

import msgpack

from hacluster.core.events import SlotContent, SlotCorrupt
from hacluster.core.messages import Report
from hacluster.wire.codec import DecodeError, Sealer, worst_case_sealed_size
from hacluster.wire.keys import Keys, Purpose, as_ring

BLOCK = 4096
HEARTBEAT_REGION = 4 * 1024 * 1024
ANCHOR_BLOCKS = 2  # the database anchor's two copies end the heartbeat region
ANCHOR_OFFSETS = tuple(HEARTBEAT_REGION - BLOCK * (ANCHOR_BLOCKS - i)
                       for i in range(ANCHOR_BLOCKS))
MEMBER_TABLE_BLOCKS = 2 * 16  # two copies of the member table (storage/members.py)
MAX_SR_HOSTS = HEARTBEAT_REGION // BLOCK - 1 - ANCHOR_BLOCKS - MEMBER_TABLE_BLOCKS
DEFAULT_METADATA = 256 * 1024 * 1024
SLOT_MAGIC = b"HASL"
GLOBAL_MAGIC = b"HASR"
LAYOUT_VERSION = 1
EMPTY_BLOCK = bytes(BLOCK)
SLOT_FRAMING = len(SLOT_MAGIC) + 2 + 4  # magic, length, crc32 around the sealed report


class PoolState(IntEnum):
    NONE = 0
    INIT = 1
    ACTIVE = 2
    INVALID = 3


class SRError(ValueError):
    """The volume is not a usable heartbeat SR (with the reason)."""


@dataclass(frozen=True)
class GlobalBlock:
    generation: int
    state: PoolState
    master: int | None
    hosts: int

    def encode(self, keys: Keys) -> bytes:
        body: bytes = msgpack.packb([self.generation, int(self.state),
                                     -1 if self.master is None else self.master, self.hosts])
        head = GLOBAL_MAGIC + bytes([LAYOUT_VERSION]) + struct.pack(">H", len(body)) + body
        return (head + sign_header(keys, head)).ljust(BLOCK, b"\0")

    @classmethod
    def decode(cls, block: bytes, keys: Keys) -> GlobalBlock:
        if block[:4] != GLOBAL_MAGIC:
            raise SRError("not a heartbeat SR (bad magic in the global block)")
        if block[4] != LAYOUT_VERSION:
            raise SRError(f"unsupported SR layout version {block[4]}")
        (length,) = struct.unpack(">H", block[5:7])
        head = block[: 7 + length]
        mac = block[7 + length : 7 + length + HEADER_MAC]
        verify_header(keys, head, mac, SRError, "global block")
        generation, state, master, hosts = msgpack.unpackb(block[7 : 7 + length])
        return cls(generation, PoolState(state), None if master < 0 else master, hosts)


HEADER_MAC = 32  # bytes of an SR header key's HMAC-SHA256


def sign_header(keys: Keys, data: bytes) -> bytes:
    """The MAC of ``data`` with the ring's current SR header key (the global block,
    the member table)."""
    return _header_mac(as_ring(keys).sealing(Purpose.SR_HEADER), data)


def verify_header(keys: Keys, data: bytes, mac: bytes, error: type[Exception],
                  what: str) -> None:
    """Raise ``error`` unless ``mac`` is ``data``'s MAC under either of the ring's keys."""
    def verify(key: bytes) -> None:
        if not hmac.compare_digest(mac, _header_mac(key, data)):
            raise error(f"{what} not authenticated by this pool key")
    as_ring(keys).open_with(Purpose.SR_HEADER, verify, error)


def _header_mac(derived: bytes, head: bytes) -> bytes:
    return hmac.new(derived, head, hashlib.sha256).digest()


def slot_offset(index: int) -> int:
    if not 0 <= index < MAX_SR_HOSTS:
        raise SRError(f"host index {index} outside 0..{MAX_SR_HOSTS - 1}")
    return BLOCK * (1 + index)


def _slot_sealer(sealer: Sealer) -> Sealer:
    if sealer.purpose is not Purpose.SLOT:
        raise ValueError(f"slots are sealed with a Purpose.SLOT sealer, not {sealer.purpose.name}")
    return sealer


@cache
def max_pool_hosts() -> int:
    """The most hosts a pool may have: its worst-case report still fits one slot."""
    fits, too_many = 0, MAX_SR_HOSTS + 1  # worst_case_sealed_size grows with the pool
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        if SLOT_FRAMING + worst_case_sealed_size(middle) <= BLOCK:
            fits = middle
        else:
            too_many = middle
    return fits


def encode_slot(sealer: Sealer, report: Report) -> bytes:
    sealed = _slot_sealer(sealer).seal(report)
    body = SLOT_MAGIC + struct.pack(">H", len(sealed)) + sealed
    block = body + struct.pack(">I", zlib.crc32(body))
    if len(block) > BLOCK:
        raise SRError(f"report of {len(block)} bytes does not fit a {BLOCK}-byte slot")
    return block.ljust(BLOCK, b"\0")


def decode_slot(sealer: Sealer, block: bytes, index: int) -> SlotContent:
    if block == EMPTY_BLOCK:
        return None
    if len(block) != BLOCK or block[:4] != SLOT_MAGIC:
        return SlotCorrupt("bad magic")
    (length,) = struct.unpack(">H", block[4:6])
    end = 6 + length
    if end + 4 > BLOCK:
        return SlotCorrupt("bad length")
    (crc,) = struct.unpack(">I", block[end : end + 4])
    if crc != zlib.crc32(block[:end]):
        return SlotCorrupt("checksum mismatch")
    if block[end + 4 :] != EMPTY_BLOCK[end + 4 :]:  # a compare, not a scan
        return SlotCorrupt("garbage after the record")
    try:
        report = _slot_sealer(sealer).open(block[6:end])
    except DecodeError as error:
        return SlotCorrupt(str(error))
    if report.sender != index:
        return SlotCorrupt(f"slot {index} written by host {report.sender}")
    return report


class BlockDevice:
    """Whole-block reads and writes on a file or block device, O_DIRECT if possible."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        flags = os.O_RDWR | getattr(os, "O_DSYNC", 0)
        self.direct = False
        try:
            self.fd = os.open(self.path, flags | os.O_DIRECT)
            self.direct = True
        except OSError:
            self.fd = os.open(self.path, flags)
        self._buffer = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT requires

    def read(self, offset: int) -> bytes:
        got = os.preadv(self.fd, [self._buffer], offset)
        if got != BLOCK:
            raise OSError(f"short read of {got} bytes at offset {offset}")
        return bytes(self._buffer)

    def write(self, offset: int, block: bytes) -> None:
        if len(block) != BLOCK:
            raise ValueError(f"writes are whole {BLOCK}-byte blocks")
        self._buffer[:] = block
        put = os.pwritev(self.fd, [self._buffer], offset)
        if put != BLOCK:
            raise OSError(f"short write of {put} bytes at offset {offset}")

    def read_blocks(self, offset: int, count: int) -> bytes:
        """``count`` consecutive whole blocks from ``offset``, read through one aligned buffer."""
        if count < 1:
            raise ValueError(f"reads are one or more whole {BLOCK}-byte blocks, not {count}")
        with mmap.mmap(-1, count * BLOCK) as buffer, memoryview(buffer) as view:
            done = 0
            while done < len(view):
                got = os.preadv(self.fd, [view[done:]], offset + done)
                if got <= 0 or got % BLOCK:
                    raise OSError(f"short read of {got} bytes at offset {offset + done}")
                done += got
            return bytes(view)

    def write_blocks(self, offset: int, data: bytes) -> None:
        """Whole consecutive blocks from ``offset``; on return all of them are on the medium."""
        if not data or len(data) % BLOCK:
            raise ValueError(f"writes are whole {BLOCK}-byte blocks")
        with mmap.mmap(-1, len(data)) as buffer, memoryview(buffer) as view:
            view[:] = data
            done = 0
            while done < len(view):
                put = os.pwritev(self.fd, [view[done:]], offset + done)
                if put <= 0 or put % BLOCK:
                    raise OSError(f"short write of {put} bytes at offset {offset + done}")
                done += put

    def close(self) -> None:
        os.close(self.fd)
        self._buffer.close()


def format_sr(path: str | Path, hosts: int, key: Keys, generation: int,
              metadata: int = DEFAULT_METADATA, state: PoolState = PoolState.INIT) -> GlobalBlock:
    """Lay out a heartbeat SR: global block, empty slots, metadata region."""
    if not 1 <= hosts <= max_pool_hosts():
        raise SRError(f"an SR holds 1 to {max_pool_hosts()} hosts (the most whose reports "
                      f"fit a {BLOCK}-byte slot), not {hosts}")
    if metadata < 0 or metadata % BLOCK:
        raise SRError(f"metadata size must be a multiple of {BLOCK} bytes")
    target = Path(path)
    size = HEARTBEAT_REGION + metadata
    if not target.exists():
        with target.open("wb") as new:
            new.truncate(size)
    elif target.is_file() and target.stat().st_size < size:
        with target.open("r+b") as grow:
            grow.truncate(size)
    device = BlockDevice(target)
    try:
        if os.lseek(device.fd, 0, os.SEEK_END) < size:
            raise SRError(f"{path} is smaller than the {size} bytes an SR needs")
        header = GlobalBlock(generation, state, None, hosts)
        write_layout(device, header, key)
    finally:
        device.close()
    return header


def write_layout(device: BlockDevice, header: GlobalBlock, key: Keys) -> None:
    """A fresh generation on an SR: every host's slot emptied, then the global block."""
    for index in range(header.hosts):
        device.write(slot_offset(index), EMPTY_BLOCK)
    device.write(0, header.encode(key))


def reseal_header(device: BlockDevice, keys: Keys) -> GlobalBlock:
    """The global block rewritten as it is, MACed with the ring's current key."""
    header = GlobalBlock.decode(device.read(0), keys)
    device.write(0, header.encode(keys))
    return header
