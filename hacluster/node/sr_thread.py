"""The heartbeat SR seen through two lanes, each one thread with a deadline per request.

Rules:

* The **liveness lane** carries this host's slot writes and the slot reads, and
  nothing else: no management request ever waits behind it or makes it fail.
  Every slot read also reads the member table of the running generation (set
  by :meth:`Storage.follow`), so a join or an eject reaches every host within
  t2, on the liveness path's own cadence.
* The **management lane** carries the global block (HA enable and disable,
  the arming check) and member-table writes, from the control plane.
* Each lane has its own thread and its own file descriptor and aligned
  buffer; the two never touch the same blocks at once (a host writes only its
  own slot; the plane writes the header, the member table and an ejected
  host's slot).
* A request that overruns its lane's deadline is reported as failed (slot
  I/O: the core's I/O deadline; management: :data:`MANAGEMENT_DEADLINE`,
  since nothing of the liveness path waits for it); while the volume stays
  hung (the lane's earlier request still in flight), that lane's new
  requests fail at once instead of queueing behind it.
* All slots of the index space are read with one aligned multi-block read.
* :meth:`Storage.move` puts both lanes on another SR (the pool moved; only
  while HA is not running here): new threads and descriptors from then on,
  while a request still in flight on the old ones finishes there and the old
  descriptor closes after it.
* The keys (the slot sealer and the ring the global block is MACed with) are
  swapped by :meth:`Storage.rekey` on the liveness loop, one reference each:
  a request in flight uses the ring it started with, the next the new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hacluster.core.events import SlotContent
from hacluster.core.messages import Report
from hacluster.node.config import NodeConfig
from hacluster.node.osthread import name_os_thread
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

#: seconds a management request may take: HA enable writes every slot, and a
#: caller (hactl) waits for it; only a volume hung this long refuses the verb
MANAGEMENT_DEADLINE = 10.0


class Lane:
    """One thread and one descriptor on the SR; a request in flight past its
    deadline makes the next fail at once."""

    def __init__(self, path: str, name: str, deadline: float) -> None:
        self.device = BlockDevice(path)
        self.thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=name, initializer=name_os_thread, initargs=(name,))
        self.busy = False  # a request is in the thread (past its deadline, too)
        self.deadline = deadline

    async def run(self, job: Callable[[BlockDevice], Any]) -> tuple[bool, Any, str]:
        """``job(device)`` in the lane's thread: (done, its value, why not)."""
        if self.busy:
            return False, None, "volume hung: previous request still in flight"
        self.busy = True

        def work() -> Any:
            try:
                return job(self.device)
            finally:
                self.busy = False

        try:
            future = asyncio.get_running_loop().run_in_executor(self.thread, work)
            value = await asyncio.wait_for(future, self.deadline)
        except TimeoutError:
            return False, None, "I/O deadline exceeded"
        except OSError as error:
            return False, None, f"I/O error: {error}"
        return True, value, ""

    def run_blocking(self, job: Callable[[BlockDevice], Any]) -> Any:
        """``job(device)`` in the lane's thread, waited for at most the deadline."""
        return self.thread.submit(job, self.device).result(timeout=self.deadline)

    def close(self) -> None:
        """Close the descriptor after any request still in the thread; never waits."""
        self.thread.submit(self.device.close)
        self.thread.shutdown(wait=False)


class Storage:
    """The heartbeat SR: slot I/O on the liveness lane, the rest on the management lane."""

    def __init__(self, config: NodeConfig, keys: KeyRing, uuid: str, path: Path) -> None:
        self.config = config
        self.rekey(keys)
        self.uuid, self.path = uuid, path  # the SR in use, and where this host opens it
        self.liveness = Lane(str(path), "storage", config.timing.io_deadline)
        self.management = Lane(str(path), "storage-mgmt", MANAGEMENT_DEADLINE)

    generation: int | None = None  # whose member table each slot read also reads

    def move(self, uuid: str, path: Path) -> None:
        """Use SR ``uuid`` at ``path`` from now on (HA not running here: see the rules).
        Raises OSError, and keeps the SR in use, if the new one does not open."""
        liveness = Lane(str(path), "storage", self.liveness.deadline)
        try:
            management = Lane(str(path), "storage-mgmt", MANAGEMENT_DEADLINE)
        except OSError:
            liveness.close()
            raise
        old = (self.liveness, self.management)
        self.liveness, self.management = liveness, management
        self.uuid, self.path = uuid, path
        for lane in old:
            lane.close()

    @property
    def direct(self) -> bool:
        """Whether the SR is read and written with O_DIRECT."""
        return self.liveness.device.direct

    def set_deadline(self, deadline: float) -> None:
        """The liveness lane's I/O deadline (the pool's timing, once known)."""
        self.liveness.deadline = deadline

    def rekey(self, keys: KeyRing) -> None:
        """Seal slots and MAC the global block with ``keys`` from now on."""
        self.sealer: Sealer = Sealer.for_slots(keys, self.config.capacity)
        self.keys = keys

    def follow(self, generation: int | None) -> None:
        """Read the member table of ``generation`` with every slot read (None: not)."""
        self.generation = generation

    # -- the management lane ------------------------------------------------

    async def manage(self, job: Callable[[BlockDevice], Any]) -> tuple[bool, Any, str]:
        """``job(device)`` on the management lane: (done, its value, why not)."""
        return await self.management.run(job)

    def header(self, device: BlockDevice | None = None) -> GlobalBlock:
        """The global block (blocking: at start, or in a management job)."""
        return GlobalBlock.decode((device or self.management.device).read(0), self.keys)

    def members(self, generation: int,
                device: BlockDevice | None = None) -> MemberTable | None:
        """The SR's member table of ``generation`` (blocking: at start, or in a job)."""
        return read_table(device or self.management.device, self.keys, generation)

    def write_members(self, device: BlockDevice, table: MemberTable) -> None:
        """Write a new member table (the master, in a management job)."""
        write_table(device, table, self.keys)

    def free_slot(self, device: BlockDevice, index: int) -> None:
        """Zero ``index``'s slot (an eject), so its next holder starts clean."""
        device.write(slot_offset(index), bytes(BLOCK))

    def write_header(self, device: BlockDevice, generation: int, active: bool) -> None:
        """HA enable (a fresh generation, empty slots) or disable (the pool invalid)."""
        hosts = self.config.capacity
        if active:
            write_layout(device, GlobalBlock(generation, PoolState.ACTIVE, None, hosts),
                         self.keys)
        else:
            device.write(0, GlobalBlock(generation, PoolState.INVALID, None,
                                        hosts).encode(self.keys))

    # -- the liveness lane --------------------------------------------------

    def _write(self, device: BlockDevice, report: Report) -> None:
        device.write(slot_offset(report.sender), encode_slot(self.sealer, report))

    def _read(self, device: BlockDevice) -> tuple[dict[int, SlotContent], MemberTable | None]:
        count = self.config.capacity
        data = device.read_blocks(slot_offset(0), count)
        slots = {i: decode_slot(self.sealer, data[i * BLOCK:(i + 1) * BLOCK], i)
                 for i in range(count)}
        generation = self.generation
        return slots, (None if generation is None else self.members(generation, device))

    async def write(self, report: Report) -> tuple[bool, str]:
        ok, _, error = await self.liveness.run(lambda device: self._write(device, report))
        return ok, error

    async def read(self) -> tuple[dict[int, SlotContent] | None, MemberTable | None, str]:
        """Every slot, and the member table if followed (``None`` slots: the read failed)."""
        ok, found, error = await self.liveness.run(self._read)
        return (found[0], found[1], error) if ok else (None, None, error)

    def write_last_words(self, report: Report) -> None:
        """A fenced host's last words, written from the loop's thread: waits at most
        the I/O deadline (the VMs are dead already; the exit must not hang)."""
        self.liveness.run_blocking(lambda device: self._write(device, report))

    def close(self) -> None:
        self.liveness.close()
        self.management.close()
