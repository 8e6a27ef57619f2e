"""The heartbeat sockets on real UDP sockets: batches, their stamps, floods, sends."""

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


async def _open(interval: float) -> tuple[HeartbeatSockets, list[tuple[float, list[Datagram]]],
                                          Address]:
    loop = asyncio.get_running_loop()
    batches: list[tuple[float, list[Datagram]]] = []
    address = Address("127.0.0.1", _free_port())
    sockets = HeartbeatSockets(loop, [address], lambda stamp, batch: batches.append(
        (stamp, batch)), lambda: interval)
    sockets.open()
    return sockets, batches, address


async def test_datagrams_of_one_interval_come_in_one_batch_stamped_when_it_began() -> None:
    loop = asyncio.get_running_loop()
    sockets, batches, address = await _open(0.2)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            first = loop.time()
            for n in range(5):
                sender.sendto(b"beat %d" % n, (address.host, address.port))
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
        assert len(batches) == 1, batches
        stamp, batch = batches[0]
        assert [data for _, data, _ in batch] == [b"beat %d" % n for n in range(5)]
        assert all(network == 0 and host == "127.0.0.1" for network, _, host in batch)
        # stamped when the first arrived, not when the batch was read (0.1 s later)
        assert first <= stamp < first + 0.05
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


async def test_a_flush_hands_over_the_batch_under_way_at_once() -> None:
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
