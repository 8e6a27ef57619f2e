"""The heartbeat SR's two lanes (:mod:`hacluster.node.sr_thread`) on a real slow medium.

The medium is the lab's FUSE fault layer in ``slow`` mode: every request the
kernel passes it waits half a second, so a request is reliably in flight while
the test sends the next. Management I/O (HA disable, a member-table write)
must neither wait behind the liveness lane's slot I/O nor make it fail, and
the other way round; the same lane still refuses a second request while its
first is in flight (a hung volume does not queue work).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hacluster.core.messages import Report
from hacluster.core.node import Mode
from hacluster.core.pooldb import DEFAULT_HEARTBEAT_SR
from hacluster.core.timing import Timing
from hacluster.model.address import Address
from hacluster.node.config import NodeConfig
from hacluster.node.sr_thread import Storage
from hacluster.storage.members import Member, MemberTable
from hacluster.storage.sr import BLOCK, PoolState, format_sr

from ..conftest import report
from ..fakes import HOSTS, KEY

Mount = Callable[[bool], tuple[Path, Path]]
GENERATION = 1
LANE_DEADLINE = 20.0  # far beyond the slow medium's delays: only refusals fail a request


@pytest.fixture
def slow_storage(tmp_path: Path, fuse_medium: Mount) -> Iterator[Storage]:
    """Host 0's storage on a 3-host SR on the FUSE medium, every request slowed."""
    sr, control = fuse_medium(False)
    format_sr(sr, HOSTS, KEY, GENERATION, metadata=BLOCK * 64)
    config = NodeConfig(
        index=0, hosts=tuple((Address(f"10.9.0.{i + 1}", 7000),) for i in range(HOSTS)),
        sr=sr, key=KEY, timing=Timing.derive(5.0), mode=Mode.STATEFILE,
        status_socket=tmp_path / "status.sock", log=None)
    storage = Storage(config, config.keys, DEFAULT_HEARTBEAT_SR, config.sr)
    storage.set_deadline(LANE_DEADLINE)  # the management lane's is longer already
    storage.follow(GENERATION)  # each slot read also reads the member table, as when armed
    control.write_text("slow")
    try:
        yield storage
    finally:
        control.write_text("ok")
        storage.close()


async def in_flight() -> None:
    """Long enough for a request just sent to reach the slowed medium."""
    await asyncio.sleep(0.2)


async def test_ha_disable_goes_while_a_slot_read_is_in_flight(slow_storage: Storage) -> None:
    storage = slow_storage
    read = asyncio.create_task(storage.read())
    await in_flight()
    assert not read.done(), "the slot read must still be in flight for this test to mean anything"

    ok, _, error = await storage.manage(
        lambda device: storage.write_header(device, GENERATION, active=False))

    assert ok, f"HA disable was refused while a slot read was in flight: {error}"
    slots, _, error = await read
    assert slots is not None, f"the slot read failed beside a management write: {error}"
    assert storage.header().state is PoolState.INVALID


async def test_a_slot_write_goes_while_a_member_table_write_is_in_flight(
        slow_storage: Storage) -> None:
    storage = slow_storage
    table = MemberTable(GENERATION, 1, HOSTS, tuple(
        Member(i, f"host-{i}", f"host{i}", (f"10.9.0.{i + 1}",)) for i in range(HOSTS)))
    written = asyncio.create_task(storage.manage(
        lambda device: storage.write_members(device, table)))
    await in_flight()
    assert not written.done()

    ok, error = await storage.write(report(0, 7, generation=GENERATION))

    assert ok, f"a slot write was refused while a member-table write was in flight: {error}"
    done, _, error = await written
    assert done, error
    slots, members, error = await storage.read()
    assert slots is not None, error
    assert members == table
    mine = slots[0]
    assert isinstance(mine, Report) and mine.seq == 7


async def test_a_lane_refuses_a_second_request_while_its_first_is_in_flight(
        slow_storage: Storage) -> None:
    storage = slow_storage
    first = asyncio.create_task(storage.read())
    await in_flight()

    ok, error = await storage.write(report(0, 1, generation=GENERATION))

    assert not ok and "previous request still in flight" in error
    slots, _, error = await first
    assert slots is not None, error


async def test_a_move_leaves_a_request_in_flight_on_the_old_sr_and_serves_the_next_on_the_new(
        slow_storage: Storage, tmp_path: Path) -> None:
    storage = slow_storage
    read = asyncio.create_task(storage.read())
    await in_flight()
    assert not read.done()
    other = tmp_path / "other.sr"
    format_sr(other, HOSTS, KEY, GENERATION, metadata=BLOCK * 64)

    storage.move("other-sr", other)  # does not wait for the hung-looking old lane

    assert not read.done()
    ok, error = await storage.write(report(0, 3, generation=GENERATION))
    assert ok, f"the new SR's lane waited behind the old one's request: {error}"
    slots, _, error = await read
    assert slots is not None, f"the read in flight failed when its SR was left: {error}"
    slots, _, error = await storage.read()
    assert slots is not None and isinstance(slots[0], Report) and slots[0].seq == 3, error
