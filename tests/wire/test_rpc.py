"""Authenticated RPC on real loopback sockets: what is answered and what is dropped unread."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hacluster.wire import rpc
from hacluster.wire.codec import new_pool_key
from hacluster.wire.dial import PathMemory
from hacluster.wire.listener import ConnectionGate, Listener, ListenerLimits
from hacluster.wire.rpc import (
    CHALLENGE,
    MAX_FRAME,
    NEXT_PATH_DELAY,
    REQUEST,
    RESPONSE,
    RpcError,
    RpcStats,
    call,
    call_any,
    open_frame,
    rpc_aead,
    seal_frame,
    serve,
)

from ..conftest import BlackHole

KEY = new_pool_key()
HOST = "127.0.0.1"
TARGET = rpc.target("host-a")


class Echo:
    """A handler that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(request)
        if request.get("op") == "fail":
            raise RuntimeError("the handler broke")
        return {"ok": True, "echo": request}


class Running:
    def __init__(self, server: Listener, stats: RpcStats, handler: Echo) -> None:
        self.server = server
        self.stats = stats
        self.handler = handler
        self.port: int = server.sockets[0].getsockname()[1]


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    stats, handler = RpcStats(), Echo()
    stats.gate = ConnectionGate(ListenerLimits(preauth=2.0))
    server = await serve(HOST, 0, KEY, handler, stats, target=TARGET)
    yield Running(server, stats, handler)
    server.close()
    await server.wait_closed()


async def raw_exchange(port: int, send: bytes) -> tuple[bytes, bytes]:
    """Connect, take the challenge, send ``send``, and read all the server says until it closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    challenge = await reader.readexactly(CHALLENGE)
    writer.write(send)
    await writer.drain()
    said = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return challenge, said


async def test_round_trip(running: Running) -> None:
    request = {"op": "list", "since": 3, "blob": b"\x00\xff", "nested": {"a": [1, 2.5, None]}}
    assert await call(HOST, running.port, KEY, request, timeout=5, target=TARGET) == {
        "ok": True, "echo": request}
    answer = await call(HOST, running.port, KEY, {"op": "fail"}, timeout=5, target=TARGET)
    assert answer == {"ok": False, "error": "the handler broke"}
    assert (running.stats.answered, running.stats.bad_requests) == (2, 0)


async def test_wrong_key_is_refused_and_counted(running: Running) -> None:
    with pytest.raises(RpcError, match=r"closed without answering.*pool key"):
        await call(HOST, running.port, new_pool_key(), {"op": "stop", "vm": "x"}, timeout=5,
                   target=TARGET)
    assert running.handler.seen == []
    assert running.stats.bad_requests == 1
    assert "authentication failed" in running.stats.last_bad_request


async def test_the_pool_key_itself_is_not_the_rpc_key(running: Running) -> None:
    reader, writer = await asyncio.open_connection(HOST, running.port)
    challenge = await reader.readexactly(CHALLENGE)
    nonce = bytes(12)
    body = nonce + ChaCha20Poly1305(KEY).encrypt(nonce, msgpack.packb({"op": "list"}),
                                                 challenge + REQUEST + TARGET)
    writer.write(len(body).to_bytes(4, "big") + body)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert running.handler.seen == [] and running.stats.bad_requests == 1


async def test_a_captured_request_replayed_on_a_new_connection_is_refused(
        running: Running) -> None:
    reader, writer = await asyncio.open_connection(HOST, running.port)
    challenge = await reader.readexactly(CHALLENGE)
    captured = seal_frame(KEY, challenge, REQUEST, {"op": "stop", "vm": "x"}, target=TARGET)
    writer.write(captured)
    body = await rpc.read_frame(reader)
    writer.close()
    assert open_frame(KEY, challenge, RESPONSE, body, target=TARGET)["ok"] is True
    new_challenge, said = await raw_exchange(running.port, captured)
    assert new_challenge != challenge and said == b""
    assert len(running.handler.seen) == 1
    assert running.stats.bad_requests == 1
    assert "authentication failed" in running.stats.last_bad_request


async def test_a_request_reflected_as_a_response_does_not_open() -> None:
    challenge = bytes(CHALLENGE)
    frame = seal_frame(KEY, challenge, REQUEST, {"ok": True}, target=TARGET)
    with pytest.raises(rpc.FrameError, match="authentication failed"):
        open_frame(KEY, challenge, RESPONSE, frame[4:], target=TARGET)


async def test_oversized_length_prefix_is_refused_unread(running: Running) -> None:
    took = time.monotonic()
    _, said = await raw_exchange(running.port, (MAX_FRAME + 1).to_bytes(4, "big"))
    assert said == b"" and time.monotonic() - took < 1.5  # not waiting for 1 MiB nor the deadline
    assert running.stats.bad_requests == 1
    assert "outside" in running.stats.last_bad_request
    assert running.handler.seen == []


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x40" + bytes(range(64)),       # well framed, not sealed
    b"\x00\x00\x00\x02xy",                         # shorter than a nonce and tag
    b"\x00\x00\x01\x00" + b"cut short",            # closes in the middle of a frame
    b"GET / HTTP/1.1\r\n\r\n",                     # another protocol
])
async def test_garbage_is_refused_and_counted(running: Running, garbage: bytes) -> None:
    reader, writer = await asyncio.open_connection(HOST, running.port)
    await reader.readexactly(CHALLENGE)
    writer.write(garbage)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await asyncio.sleep(0.05)
    assert running.stats.bad_requests == 1 and running.handler.seen == []


async def test_a_sealed_non_map_is_refused(running: Running) -> None:
    aead = rpc_aead(KEY)
    reader, writer = await asyncio.open_connection(HOST, running.port)
    challenge = await reader.readexactly(CHALLENGE)
    nonce = bytes(12)
    body = nonce + aead.encrypt(nonce, msgpack.packb([1, 2]), challenge + REQUEST + TARGET)
    writer.write(len(body).to_bytes(4, "big") + body)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert running.stats.bad_requests == 1 and "not a map" in running.stats.last_bad_request


async def test_a_silent_client_is_dropped_at_the_deadline(running: Running) -> None:
    reader, writer = await asyncio.open_connection(HOST, running.port)
    await reader.readexactly(CHALLENGE)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert running.stats.bad_requests == 1 and "within" in running.stats.last_bad_request


async def test_client_timeout_against_a_server_that_never_answers() -> None:
    server = await BlackHole().listen(HOST)
    port = BlackHole.port(server)
    took = time.monotonic()
    with pytest.raises(RpcError, match=r"no answer within 0\.3 s"):
        await call(HOST, port, KEY, {"op": "list"}, timeout=0.3, target=TARGET)
    assert time.monotonic() - took < 2
    server.close()


async def test_malformed_and_forged_replies_are_rejected() -> None:
    aead = rpc_aead(KEY)

    async def forger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        challenge = b"c" * CHALLENGE
        writer.write(challenge)
        await rpc.read_frame(reader)
        nonce = bytes(12)
        body = nonce + aead.encrypt(nonce, msgpack.packb("not a map"),
                                    challenge + RESPONSE + TARGET)
        writer.write(len(body).to_bytes(4, "big") + body)
        await writer.drain()
        writer.close()

    async def other_key(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        challenge = b"c" * CHALLENGE
        writer.write(challenge)
        await rpc.read_frame(reader)
        writer.write(seal_frame(new_pool_key(), challenge, RESPONSE, {"ok": True},
                                target=TARGET))
        await writer.drain()
        writer.close()

    for fake, error in ((forger, "reply rejected: body is not a map"),
                        (other_key, "reply rejected: authentication failed")):
        server = await asyncio.start_server(fake, HOST, 0)
        with pytest.raises(RpcError, match=error):
            await call(HOST, server.sockets[0].getsockname()[1], KEY, {"op": "x"}, timeout=5,
                       target=TARGET)
        server.close()


async def test_connection_refused_and_unsendable_requests(running: Running) -> None:
    probe = await asyncio.start_server(lambda r, w: None, HOST, 0)
    free_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(RpcError, match="connection refused"):
        await call(HOST, free_port, KEY, {"op": "list"}, timeout=5, target=TARGET)
    with pytest.raises(RpcError, match="cannot be sent"):
        await call(HOST, running.port, KEY, {"blob": b"x" * MAX_FRAME}, timeout=5, target=TARGET)
    with pytest.raises(ValueError, match="32 bytes"):
        await call(HOST, running.port, b"short", {"op": "list"}, timeout=5, target=TARGET)


# ------------------------------------------------------------ several networks
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def test_a_call_goes_over_the_next_network_when_the_first_refuses(
        running: Running) -> None:
    took = time.monotonic()
    answer = await call_any([(HOST, closed_port()), (HOST, running.port)], KEY, {"op": "x"},
                            timeout=5, target=TARGET)
    assert answer == {"ok": True, "echo": {"op": "x"}}
    assert time.monotonic() - took < NEXT_PATH_DELAY  # a refusal moves on at once


async def test_a_call_goes_around_a_network_that_swallows_packets(running: Running) -> None:
    mute = await BlackHole().listen(HOST)
    async with mute:
        took = time.monotonic()
        answer = await call_any([(HOST, mute.sockets[0].getsockname()[1]),
                                 (HOST, running.port)], KEY, {"op": "x"}, 5, target=TARGET)
        waited = time.monotonic() - took
    assert answer["ok"] and running.handler.seen == [{"op": "x"}]
    print(f"around a mute first network in {waited:.3f} s")
    assert NEXT_PATH_DELAY * 0.9 <= waited < 2.0


async def test_a_path_memory_goes_straight_to_the_network_that_answered_last(
        running: Running) -> None:
    """The mute network is tried once; the next calls go to the working one first, and
    after it fails too the calls go back to trying the first."""
    hole = BlackHole()
    silent = await hole.listen(HOST)
    paths = PathMemory()
    async with silent:
        endpoints = [(HOST, BlackHole.port(silent)), (HOST, running.port)]
        for n in range(5):
            answer = await call_any(endpoints, KEY, {"op": "x", "n": n}, 5, target=TARGET,
                                    paths=paths)
            assert answer["ok"]
            await asyncio.sleep(0)  # a connection to the mute server would be accepted now
        assert hole.accepted == 1, "the mute network was tried again"
        assert paths.order(endpoints) == endpoints[::-1]
        running.server.close()  # now the remembered path refuses: the other is tried
        with pytest.raises(RpcError):
            await call_any(endpoints, KEY, {"op": "x"}, 1, target=TARGET, paths=paths)
        assert hole.accepted == 2
    assert [r["n"] for r in running.handler.seen] == list(range(5))
    assert PathMemory().order(endpoints) == endpoints  # nothing remembered: in order


async def test_a_request_is_sent_over_one_network_only(running: Running) -> None:
    """Both networks work: the first answers, the second is never sent the request."""
    second_stats, second = RpcStats(), Echo()
    other = await serve(HOST, 0, KEY, second, second_stats, target=TARGET)
    async with other:
        for n in range(20):
            await call_any([(HOST, running.port), (HOST, other.sockets[0].getsockname()[1])],
                           KEY, {"op": "x", "n": n}, 5, target=TARGET)
    assert sorted(r["n"] for r in running.handler.seen + second.seen) == list(range(20))


async def test_every_network_failing_is_one_error_naming_them() -> None:
    mute = await BlackHole().listen(HOST)
    async with mute:
        with pytest.raises(RpcError, match=r"no answer within 0\.6 s"):
            await call_any([(HOST, mute.sockets[0].getsockname()[1]), (HOST, closed_port())],
                           KEY, {"op": "x"}, 0.6, target=TARGET)
    with pytest.raises(RpcError, match="connection refused"):
        await call_any([(HOST, closed_port()), (HOST, closed_port())], KEY, {"op": "x"}, 2,
                       target=TARGET)
