"""The heartbeat SR seen through one thread, with a deadline per request.

Rules:

* Slot writes and reads run in one dedicated thread, never on the event loop.
* A request that overruns the core's I/O deadline is reported as failed;
  while the volume stays hung (the earlier request still in flight), new
  requests fail at once instead of queueing behind it.
* The global block (HA enable and disable) and the member table go through
  the same thread. Every slot read also reads the member table of the
  running generation (set by :meth:`Storage.follow`), so a join or an
  eject reaches every host within t2, on the liveness path's own cadence.
* All slots of the index space are read with one aligned multi-block read.
* The keys (the slot sealer and the ring the global block is MACed with) are
  swapped by :meth:`Storage.rekey` on the liveness loop, one reference each:
  a request in flight uses the ring it started with, the next the new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from hacluster.core.events import SlotContent
from hacluster.core.messages import Report
from hacluster.node.config import NodeConfig
from hacluster.storage.members import MemberTable, read_table, write_table
from hacluster.storage.sr import (
    BLOCK,
    BlockDevice,
    GlobalBlock,
    PoolState,
    decode_slot,
    encode_slot,
    slot_offset,
    write_layout,
)
from hacluster.wire.codec import Sealer
from hacluster.wire.keys import KeyRing


class Storage:
    """The heartbeat SR seen through one thread with a deadline per request."""

    def __init__(self, config: NodeConfig, keys: KeyRing) -> None:
        self.device = BlockDevice(config.sr)
        self.config = config
        self.rekey(keys)
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="storage")
        self.busy: concurrent.futures.Future[Any] | None = None
        self.deadline = config.timing.io_deadline

    generation: int | None = None  # whose member table each slot read also reads

    def rekey(self, keys: KeyRing) -> None:
        """Seal slots and MAC the global block with ``keys`` from now on."""
        self.sealer: Sealer = Sealer.for_slots(keys, self.config.capacity)
        self.keys = keys

    def follow(self, generation: int | None) -> None:
        """Read the member table of ``generation`` with every slot read (None: not)."""
        self.generation = generation

    def members(self, generation: int) -> MemberTable | None:
        """The SR's member table of ``generation`` (blocking: at start, or in a job)."""
        return read_table(self.device, self.keys, generation)

    def write_members(self, table: MemberTable) -> None:
        """Write a new member table (the master, in a job)."""
        write_table(self.device, table, self.keys)

    def free_slot(self, index: int) -> None:
        """Zero ``index``'s slot (an eject), so its next holder starts clean."""
        self.device.write(slot_offset(index), bytes(BLOCK))

    def header(self) -> GlobalBlock:
        return GlobalBlock.decode(self.device.read(0), self.keys)

    def write_header(self, generation: int, active: bool) -> None:
        """HA enable (a fresh generation, empty slots) or disable (the pool invalid)."""
        hosts = self.config.capacity
        if active:
            write_layout(self.device, GlobalBlock(generation, PoolState.ACTIVE, None, hosts),
                         self.keys)
        else:
            self.device.write(0, GlobalBlock(generation, PoolState.INVALID, None,
                                             hosts).encode(self.keys))

    def _write(self, report: Report) -> None:
        self.device.write(slot_offset(report.sender), encode_slot(self.sealer, report))

    def _read(self) -> tuple[dict[int, SlotContent], MemberTable | None]:
        count = self.config.capacity
        data = self.device.read_blocks(slot_offset(0), count)
        slots = {i: decode_slot(self.sealer, data[i * BLOCK:(i + 1) * BLOCK], i)
                 for i in range(count)}
        generation = self.generation
        return slots, (None if generation is None else self.members(generation))

    async def run(self, job: Callable[[], Any]) -> tuple[bool, Any, str]:
        if self.busy is not None and not self.busy.done():
            return False, None, "volume hung: previous request still in flight"
        self.busy = self.pool.submit(job)
        try:
            value = await asyncio.wait_for(asyncio.wrap_future(self.busy), self.deadline)
        except TimeoutError:
            return False, None, "I/O deadline exceeded"
        except OSError as error:
            return False, None, f"I/O error: {error}"
        return True, value, ""

    async def write(self, report: Report) -> tuple[bool, str]:
        ok, _, error = await self.run(lambda: self._write(report))
        return ok, error

    async def read(self) -> tuple[dict[int, SlotContent] | None, MemberTable | None, str]:
        """Every slot, and the member table if followed (``None`` slots: the read failed)."""
        ok, found, error = await self.run(self._read)
        return (found[0], found[1], error) if ok else (None, None, error)

    def write_last_words(self, report: Report) -> None:
        """A fenced host's last words, written from the loop's thread: waits at most
        the I/O deadline (the VMs are dead already; the exit must not hang)."""
        self.pool.submit(self._write, report).result(timeout=self.deadline)
