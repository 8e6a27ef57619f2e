"""The pool's member table on the heartbeat SR: which host holds which HA index.

Rules:

* A :class:`MemberTable` lists, for one generation, every member: its HA
  index, uuid, name and heartbeat addresses (``host:port`` strings, one per
  heartbeat network). ``capacity`` is the generation's index space (its SR
  slots); ``version`` grows by one at every change, which only the master
  writes: :meth:`MemberTable.joined` gives a new host the lowest free index,
  :meth:`MemberTable.ejected` frees one (never the last member).
* Entries are unique by index, uuid and address, within the capacity, and a
  table lists at most :func:`~hacluster.storage.sr.max_pool_hosts` members;
  anything else is :class:`MembersError`, saying what is wrong, and nothing
  is written.
* The table lives in two copies of :data:`TABLE_BLOCKS` blocks just before
  the anchor. Version ``v`` is written to copy ``v % 2``, so a torn write
  leaves the other copy, one version older, intact; a reader takes the
  newest copy that authenticates and belongs to the generation it expects.
* A copy is ``b"HAMT" | layout(1) | length(4) | msgpack body | hmac-sha256``
  over everything before the MAC, with the pool key's SR header key
  (``Purpose.SR_HEADER``). Zero blocks are "no table" (an SR formatted
  before tables existed: the nodes' configurations list the members).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import msgpack

from hacluster.storage.sr import (
    ANCHOR_OFFSETS,
    BLOCK,
    HEADER_MAC,
    MEMBER_TABLE_BLOCKS,
    BlockDevice,
    max_pool_hosts,
    sign_header,
    verify_header,
)
from hacluster.wire.keys import Keys
from hacluster.wire.unpack import Malformed, unpack

TABLE_MAGIC = b"HAMT"
TABLE_LAYOUT = 1
TABLE_BLOCKS = MEMBER_TABLE_BLOCKS // 2  # 64 KiB a copy: room for the largest pool
TABLE_BYTES = TABLE_BLOCKS * BLOCK
TABLE_OFFSETS = tuple(ANCHOR_OFFSETS[0] - TABLE_BYTES * (2 - i) for i in range(2))
_HEAD = len(TABLE_MAGIC) + 1 + 4
_MAC = HEADER_MAC


class MembersError(ValueError):
    """A member table or change that cannot be accepted, with the reason."""


@dataclass(frozen=True)
class Member:
    index: int
    uuid: str
    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class MemberTable:
    generation: int
    version: int
    capacity: int
    members: tuple[Member, ...]  # sorted by index

    def __post_init__(self) -> None:
        if not 1 <= self.capacity <= max_pool_hosts():
            raise MembersError(f"capacity {self.capacity} outside 1..{max_pool_hosts()}")
        if not self.members:
            raise MembersError("a pool has at least one member")
        for kind, values in (("index", [m.index for m in self.members]),
                             ("uuid", [m.uuid for m in self.members]),
                             ("address", [a for m in self.members for a in m.addresses])):
            if len(set(values)) != len(values):
                raise MembersError(f"two members share an {kind}" if kind != "uuid"
                                   else "two members share a uuid")
        for m in self.members:
            if not 0 <= m.index < self.capacity:
                raise MembersError(f"member {m.name} has index {m.index}, outside "
                                   f"0..{self.capacity - 1}")
            if not m.uuid or not m.addresses:
                raise MembersError(f"member at index {m.index} needs a uuid and an address")
        object.__setattr__(self, "members", tuple(sorted(self.members, key=lambda m: m.index)))

    @property
    def indices(self) -> frozenset[int]:
        return frozenset(m.index for m in self.members)

    def by_uuid(self, uuid: str) -> Member | None:
        return next((m for m in self.members if m.uuid == uuid), None)

    def joined(self, uuid: str, name: str, addresses: tuple[str, ...]) -> MemberTable:
        """The next table, with a new member on the lowest free index."""
        if self.by_uuid(uuid) is not None:
            raise MembersError(f"host {uuid} is already a member")
        free = sorted(set(range(self.capacity)) - self.indices)
        if not free:
            raise MembersError(f"the pool has no free slot: its {self.capacity} indices are "
                               "taken (a new HA enable can give it more)")
        member = Member(free[0], uuid, name, addresses)
        return replace(self, version=self.version + 1, members=(*self.members, member))

    def ejected(self, uuid: str) -> MemberTable:
        """The next table, without member ``uuid``."""
        if self.by_uuid(uuid) is None:
            raise MembersError(f"host {uuid} is not a member")
        if len(self.members) == 1:
            raise MembersError("the last member cannot be ejected: disable HA instead")
        return replace(self, version=self.version + 1,
                       members=tuple(m for m in self.members if m.uuid != uuid))

    def encode(self, keys: Keys) -> bytes:
        body: bytes = msgpack.packb(
            [self.generation, self.version, self.capacity,
             [[m.index, m.uuid, m.name, list(m.addresses)] for m in self.members]])
        head = TABLE_MAGIC + bytes([TABLE_LAYOUT]) + struct.pack(">I", len(body))
        copy = head + body
        copy += sign_header(keys, copy)
        if len(copy) > TABLE_BYTES:
            raise MembersError(f"a member table of {len(copy)} bytes does not fit "
                               f"{TABLE_BYTES} bytes")
        return copy.ljust(TABLE_BYTES, b"\0")

    @classmethod
    def decode(cls, copy: bytes, keys: Keys) -> MemberTable | None:
        """The table in one copy; ``None`` for zero blocks; :class:`MembersError`
        for anything that is not a table this pool key wrote."""
        if copy == bytes(len(copy)):  # a compare, not a scan of 64 KiB: read every beat
            return None
        if copy[:4] != TABLE_MAGIC or copy[4] != TABLE_LAYOUT:
            raise MembersError("not a member table (bad magic or layout)")
        (length,) = struct.unpack(">I", copy[5:_HEAD])
        if _HEAD + length + _MAC > len(copy):
            raise MembersError("member table length runs past its blocks")
        signed, mac = copy[:_HEAD + length], copy[_HEAD + length:_HEAD + length + _MAC]
        verify_header(keys, signed, mac, MembersError, "member table")
        try:
            fields = unpack(copy[_HEAD:_HEAD + length], TABLE_BYTES)
            generation, version, capacity, entries = fields
            members = tuple(Member(int(i), str(u), str(n), tuple(str(a) for a in addrs))
                            for i, u, n, addrs in entries)
            return cls(int(generation), int(version), int(capacity), members)
        except (Malformed, ValueError, TypeError) as error:
            raise MembersError(f"malformed member table: {error}") from None


def write_table(device: BlockDevice, table: MemberTable, keys: Keys) -> None:
    """Write ``table`` to its copy (``version % 2``); the other copy stays intact."""
    device.write_blocks(TABLE_OFFSETS[table.version % 2], table.encode(keys))


def read_table(device: BlockDevice, keys: Keys, generation: int) -> MemberTable | None:
    """The newest authentic table of ``generation``, or ``None`` if no copy holds one."""
    best: MemberTable | None = None
    for offset in TABLE_OFFSETS:
        try:
            table = MemberTable.decode(device.read_blocks(offset, TABLE_BLOCKS), keys)
        except MembersError:
            continue
        if table is not None and table.generation == generation and (
                best is None or table.version > best.version):
            best = table
    return best
