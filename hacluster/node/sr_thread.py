"""The heartbeat SR seen through one thread, with a deadline per request.

Rules:

* Slot writes and reads run in one dedicated thread, never on the event loop.
* A request that overruns the core's I/O deadline is reported as failed;
  while the volume stays hung (the earlier request still in flight), new
  requests fail at once instead of queueing behind it.
* The global block (HA enable and disable) goes through the same thread.
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
from hacluster.storage.sr import (
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

    def rekey(self, keys: KeyRing) -> None:
        """Seal slots and MAC the global block with ``keys`` from now on."""
        self.sealer: Sealer = Sealer.for_slots(keys, len(self.config.hosts))
        self.keys = keys

    def header(self) -> GlobalBlock:
        return GlobalBlock.decode(self.device.read(0), self.keys)

    def write_header(self, generation: int, active: bool) -> None:
        """HA enable (a fresh generation, empty slots) or disable (the pool invalid)."""
        hosts = len(self.config.hosts)
        if active:
            write_layout(self.device, GlobalBlock(generation, PoolState.ACTIVE, None, hosts),
                         self.keys)
        else:
            self.device.write(0, GlobalBlock(generation, PoolState.INVALID, None,
                                             hosts).encode(self.keys))

    def _write(self, report: Report) -> None:
        self.device.write(slot_offset(report.sender), encode_slot(self.sealer, report))

    def _read(self) -> dict[int, SlotContent]:
        return {i: decode_slot(self.sealer, self.device.read(slot_offset(i)), i)
                for i in range(len(self.config.hosts))}

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

    async def read(self) -> tuple[dict[int, SlotContent] | None, str]:
        ok, slots, error = await self.run(self._read)
        return (slots if ok else None), error

    def write_last_words(self, report: Report) -> None:
        """A fenced host's last words, written from the loop's thread: waits at most
        the I/O deadline (the VMs are dead already; the exit must not hang)."""
        self.pool.submit(self._write, report).result(timeout=self.deadline)
