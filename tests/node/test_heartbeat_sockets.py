"""The heartbeat sockets on real UDP sockets: polled and at once, stamps, floods, sends."""

from __future__ import annotations

import asyncio
import socket

import pytest

from hacluster.model.address import Address
from hacluster.node.heartbeat_sockets import MAX_PER_DRAIN, Datagram, HeartbeatSockets


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _payloads(batches: list[tuple[float, list[Datagram]]]) -> list[list[bytes]]:
    """Each batch's datagrams, as their bytes."""
    return [[data for _, data, _ in batch] for _, batch in batches]


async def _open(interval: float | list[float]) -> tuple[
        HeartbeatSockets, list[tuple[float, list[Datagram]]], Address]:
    """Sockets on a free port; ``interval`` a list: its first element, changeable."""
    loop = asyncio.get_running_loop()
    batches: list[tuple[float, list[Datagram]]] = []
    address = Address("127.0.0.1", _free_port())
    pace = interval if isinstance(interval, list) else [interval]
    sockets = HeartbeatSockets(loop, [address], lambda stamp, batch: batches.append(
        (stamp, batch)), lambda: pace[0])
    sockets.open()
    return sockets, batches, address


async def test_polled_datagrams_come_in_one_batch_stamped_with_the_drain_before() -> None:
    loop = asyncio.get_running_loop()
    opened = loop.time()
    sockets, batches, address = await _open(0.2)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            first = loop.time()
            for n in range(5):
                sender.sendto(b"beat %d" % n, (address.host, address.port))
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # the drain at 0.2 s reads them
            drained = loop.time()
            sender.sendto(b"later", (address.host, address.port))
            await asyncio.sleep(0.25)
        assert _payloads(batches) == [[b"beat %d" % n for n in range(5)], [b"later"]]
        assert all(network == 0 and host == "127.0.0.1" for network, _, host in batches[0][1])
        # stamped when the sockets were last drained (here: opened), never after
        # any of them arrived; the next batch, with the drain that read the first
        assert opened <= batches[0][0] <= first
        assert batches[0][0] + 0.15 < batches[1][0] <= drained
    finally:
        sockets.close()


async def test_polled_sockets_are_not_watched_and_a_change_of_pace_reads_at_once() -> None:
    loop = asyncio.get_running_loop()
    pace = [5.0]
    sockets, batches, address = await _open(pace)
    try:
        fd = sockets.sockets[0].fileno()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"waits", (address.host, address.port))
            await asyncio.sleep(0.05)
            assert batches == []  # polled: nobody is woken before the interval
            pace[0] = 0.0
            sockets.pace()  # what waited is handed over, then each one at once
            assert _payloads(batches) == [[b"waits"]]
            sender.sendto(b"now", (address.host, address.port))
            await asyncio.sleep(0.05)
            assert _payloads(batches)[1:] == [[b"now"]]
            pace[0] = 5.0
            sender.sendto(b"read at once, then polled", (address.host, address.port))
            await asyncio.sleep(0.05)
        assert _payloads(batches)[2:] == [[b"read at once, then polled"]]
        assert not loop.remove_reader(fd)  # the batch switched to polling: no reader
    finally:
        sockets.close()


async def test_with_no_interval_every_datagram_is_handled_at_once() -> None:
    sockets, batches, address = await _open(0.0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for n in range(3):
                sender.sendto(b"%d" % n, (address.host, address.port))
                await asyncio.sleep(0.05)
        assert _payloads(batches) == [[b"0"], [b"1"], [b"2"]]
    finally:
        sockets.close()


async def test_a_flood_is_read_a_bounded_drain_at_a_time() -> None:
    sockets, batches, address = await _open(0.05)
    sockets.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(MAX_PER_DRAIN + 100):
                sender.sendto(b"x", (address.host, address.port))
        for _ in range(40):
            await asyncio.sleep(0.05)
            if sum(len(batch) for _, batch in batches) >= MAX_PER_DRAIN + 100:
                break
        sizes = [len(batch) for _, batch in batches]
        assert max(sizes) <= MAX_PER_DRAIN and sum(sizes) == MAX_PER_DRAIN + 100, sizes
        # what the flood left behind arrived before that drain: stamped as early
        assert len({stamp for stamp, _ in batches}) == 1, [(s, len(b)) for s, b in batches]
    finally:
        sockets.close()


async def test_sending_never_raises_and_a_port_in_use_raises_on_open() -> None:
    loop = asyncio.get_running_loop()
    sockets, _, address = await _open(0.0)
    try:
        sockets.send(b"x" * 70000, 0, address.host, address.port)  # too big: dropped
        sockets.send(b"x", 0, "203.0.113.1", 9)  # no route here, most likely: dropped
        taken = HeartbeatSockets(loop, [address], lambda stamp, batch: None, lambda: 0.0)
        with pytest.raises(OSError):
            taken.open()
        assert taken.sockets == []
    finally:
        sockets.close()


async def test_a_flush_hands_over_what_waits_at_once() -> None:
    sockets, batches, address = await _open(5.0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"early", (address.host, address.port))
            await asyncio.sleep(0.05)
        assert batches == []
        sockets.flush()
        assert _payloads(batches) == [[b"early"]]
        sockets.flush()  # nothing under way: nothing more
        assert len(batches) == 1
    finally:
        sockets.close()


async def test_an_owner_that_flushes_often_enough_is_never_woken_by_the_poll() -> None:
    loop = asyncio.get_running_loop()
    sockets, batches, address = await _open(0.2)
    try:
        drains: list[float] = []
        drain = sockets._drain

        def counted(stamp: float) -> None:
            drains.append(loop.time())
            drain(stamp)

        sockets._drain = counted  # type: ignore[method-assign]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for n in range(8):  # the owner's own inputs, every 0.1 s
                sender.sendto(b"%d" % n, (address.host, address.port))
                await asyncio.sleep(0.1)
                sockets.flush()
        assert len(drains) == 8  # one per flush: the poll, 0.2 s after each, never came
        assert _payloads(batches) == [[b"%d" % n] for n in range(8)]
        assert sockets.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 1 << 20
    finally:
        sockets.close()
