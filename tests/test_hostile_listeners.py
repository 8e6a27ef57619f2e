"""Hostile peers of a host's listeners: nothing unauthenticated costs more than a few KiB.

A real management API server (:class:`hacluster.mgmt.api.Server`, real TLS
with the pool CA's certificates) and real host RPC servers
(:func:`hacluster.wire.rpc.serve`, a real :class:`~hacluster.node.agent.Agent`)
listen on loopback addresses; the attackers are real sockets, some bound to
other loopback addresses (127.0.0.2, 127.0.0.3) to stand for other
machines. Deadlines are short parameters (:class:`ListenerLimits`), never
long sleeps; random input is seeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import uvloop

from hacluster.mgmt import api
from hacluster.mgmt.tls import client_context, server_context
from hacluster.mgmt.verbs import VERBS, Call
from hacluster.node.agent import Agent
from hacluster.vm.driver import SimDriver
from hacluster.wire import rpc
from hacluster.wire.codec import new_pool_key
from hacluster.wire.dial import PathMemory
from hacluster.wire.listener import ConnectionGate, Listener, ListenerLimits
from hacluster.wire.rpc import CHALLENGE, LENGTH, REQUEST, FrameError, RpcError, RpcStats
from hacluster.wire.unpack import MAX_DEPTH, nests_within

from .conftest import BlackHole
from .mgmt.test_hactl import FakeHost
from .mgmt.test_tls import Pool, make_pool

LOOPBACK = "127.0.0.1"
SECRET = b"the-pool-secret-of-the-listeners-test"
KEY = new_pool_key()
HOSTS = ["host-a", "host-b", "host-c"]
PATIENT = ListenerLimits(connections=8, per_peer=4, preauth=30.0, request=30.0)
HASTY = ListenerLimits(preauth=0.5, request=0.5)
DEFAULT = ListenerLimits()


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return make_pool(tmp_path / "pool", "listeners", (LOOPBACK,))


@dataclass
class Listening:
    server: api.Server
    host: FakeHost
    endpoint: tuple[str, int]


@contextlib.asynccontextmanager
async def api_listener(pool: Pool, limits: ListenerLimits = DEFAULT,
                       host: FakeHost | None = None) -> AsyncIterator[Listening]:
    host = host if host is not None else FakeHost("answered")
    server = api.Server(host, SECRET, server_context(pool.host, pool.ca.cert),
                        client_context(pool.ca.cert), gate=ConnectionGate(limits))
    listener = await server.serve(LOOPBACK, 0)
    async with listener:
        yield Listening(server, host, (LOOPBACK, int(listener.sockets[0].getsockname()[1])))


async def tls_connect(pool: Pool, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS client that trusts the pool CA and shows no certificate."""
    return await asyncio.open_connection(LOOPBACK, port, ssl=client_context(pool.ca.cert))


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before closing (a reset counts as a close). Bytes that look
    like the start of a TLS record keep a server waiting up to its handshake limit:
    the client waits well beyond it, so only a server that never closes fails."""
    try:
        return await asyncio.wait_for(reader.read(), 3 * DEFAULT.preauth)
    except (ConnectionError, ssl.SSLError):
        return b""


async def status(endpoint: tuple[str, int], pool: Pool) -> Any:
    return await api.call([endpoint], client_context(pool.ca.cert), SECRET, Call("status"))


# ---------------------------------------------------------------- pre-auth bounds


async def test_an_oversized_credentials_frame_is_refused_on_its_length(pool: Pool) -> None:
    """Finding 1: a frame announcing 1 MiB is refused on its length prefix, before the
    rest is sent, read or decoded (before the fix the server waited for the whole MiB)."""
    async with api_listener(pool) as listening:
        reader, writer = await tls_connect(pool, listening.endpoint[1])
        writer.write(LENGTH.pack(1 << 20) + bytes(api.PREAUTH_FRAME))  # 4 KiB of the 1 MiB
        await writer.drain()
        answer = await asyncio.wait_for(api.read_message(reader), 5)
        writer.close()
    assert answer["ok"] is False
    assert f"frame length {1 << 20} outside [1, {api.PREAUTH_FRAME}]" in answer["error"]
    assert listening.server.refused == 1 and listening.host.calls == []


MSGPACK_BOMBS = {
    "array of 2**32-1": b"\xdd\xff\xff\xff\xff",
    "map of 2**32-1": b"\xdf\xff\xff\xff\xff",
    "string of 2**32-1": b"\xdb\xff\xff\xff\xff",
    "nested 200 deep": b"\x81\xa1a" + b"\x91" * 200 + b"\xc0",
    "a timestamp extension": b"\x81\xa1a\xd6\xff\x00\x00\x00\x01",
    "an unknown extension": b"\x81\xa1a\xc7\x03\x05abc",
    "a list as a map key": b"\x81\x90\x01",
    "trailing bytes": b"\x80\x80",
}


async def test_msgpack_bombs_and_mutated_frames_are_frame_errors(pool: Pool) -> None:
    """Every bomb raises FrameError (nothing else, no value), and so does every one of 3000
    seeded mutations of valid messages that is not a bounded map; on the wire, a nested
    one in the credentials frame is refused as malformed, never decoded into a call."""
    for name, bomb in MSGPACK_BOMBS.items():
        with pytest.raises(FrameError, match=r"malformed|not a map"):
            rpc.decode_message(bomb, 1 << 16)
            pytest.fail(f"{name} decoded")
    rng = random.Random(4242)
    seeds = [msgpack.packb({"m": random_value(rng)}, use_bin_type=True) for _ in range(200)]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(FrameError):
            assert nests_within(rpc.decode_message(bytes(data), 1 << 12), MAX_DEPTH)
    async with api_listener(pool) as listening:
        reader, writer = await tls_connect(pool, listening.endpoint[1])
        nested = MSGPACK_BOMBS["nested 200 deep"]
        writer.write(LENGTH.pack(len(nested)) + nested)
        answer = await asyncio.wait_for(api.read_message(reader), 5)
        writer.close()
    assert "bad credentials: malformed body: nested deeper than" in answer["error"]
    assert listening.server.refused == 1 and listening.host.calls == []


# ---------------------------------------------------------------- connection caps


async def test_a_flood_from_one_address_is_turned_away_while_others_are_answered(
        pool: Pool) -> None:
    """Finding 2: idle connections from one address fill its share only; the next one is
    closed at once, unread, while a client elsewhere still gets its answer."""
    async with api_listener(pool, PATIENT) as listening:
        port = listening.endpoint[1]
        held = [await asyncio.open_connection(LOOPBACK, port, local_addr=("127.0.0.2", 0))
                for _ in range(PATIENT.per_peer)]
        reader, _ = await asyncio.open_connection(LOOPBACK, port, local_addr=("127.0.0.2", 0))
        assert await closed_by_server(reader) == b""
        assert await status(listening.endpoint, pool) == "answered"
        gate = listening.server.gate
        assert gate.turned_away == 1 and gate.live["127.0.0.2"] == PATIENT.per_peer
        for _, writer in held:
            writer.close()


async def test_a_full_listener_turns_everyone_away_until_a_slot_frees(pool: Pool) -> None:
    async with api_listener(pool, PATIENT) as listening:
        port = listening.endpoint[1]
        held = [await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0))
                for source in ("127.0.0.2", "127.0.0.3") for _ in range(PATIENT.per_peer)]
        with pytest.raises(api.ApiError, match="no host of the pool answered"):
            await status(listening.endpoint, pool)
        assert listening.server.gate.turned_away == 1 and listening.host.calls == []
        _, writer = held.pop()
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.1)  # the server sees the close
        assert await status(listening.endpoint, pool) == "answered"
        for _, writer in held:
            writer.close()


async def test_rpc_connections_over_the_cap_are_closed_at_once() -> None:
    stats = RpcStats(gate=ConnectionGate(PATIENT))
    server = await rpc.serve(LOOPBACK, 0, KEY, echo, stats, target=rpc.target(HOSTS[0]))
    port = server.sockets[0].getsockname()[1]
    async with server:
        held = [await asyncio.open_connection(LOOPBACK, port, local_addr=("127.0.0.2", 0))
                for _ in range(PATIENT.per_peer)]
        reader, _ = await asyncio.open_connection(LOOPBACK, port, local_addr=("127.0.0.2", 0))
        assert await closed_by_server(reader) == b""  # not even a challenge
        answer = await rpc.call(LOOPBACK, port, KEY, {"op": "x"}, 5, target=rpc.target(HOSTS[0]))
        assert answer == {"ok": True, "echo": {"op": "x"}}
        assert stats.gate.turned_away == 1
        for _, writer in held:
            writer.close()


async def test_admitted_clients_are_answered_under_uvloop(pool: Pool) -> None:
    """The daemon runs uvloop, which reads a socket as soon as it is accepted: TLS must be
    the loop's from the first byte (an early version upgraded a plain stream and lost the
    client's first bytes: about one call in twelve hung to the deadline, nearly every one
    on a busy loop). The server's loop is kept busy, as a daemon's under load."""

    async def busy() -> None:
        while True:
            time.sleep(0.002)  # a callback that holds the loop, as real work does
            await asyncio.sleep(0)

    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    host = FakeHost("answered")
    server = api.Server(host, SECRET, server_context(pool.host, pool.ca.cert),
                        client_context(pool.ca.cert), gate=ConnectionGate(HASTY))
    listener = asyncio.run_coroutine_threadsafe(server.serve(LOOPBACK, 0), loop).result(10)
    load = asyncio.run_coroutine_threadsafe(busy(), loop)
    try:
        endpoint = (LOOPBACK, int(listener.sockets[0].getsockname()[1]))
        for _ in range(5):
            assert await asyncio.gather(*(status(endpoint, pool) for _ in range(8))) == [
                "answered"] * 8
        assert server.gate.no_tls == 0 and server.refused == 0
    finally:
        load.cancel()
        loop.call_soon_threadsafe(listener.close)
        asyncio.run_coroutine_threadsafe(listener.wait_closed(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# ---------------------------------------------------------------- deadlines


async def test_a_tcp_connection_that_never_starts_tls_is_cut_at_the_deadline(
        pool: Pool) -> None:
    """Finding 2: such a connection was held about 60 s (the TLS handshake default)."""
    async with api_listener(pool, HASTY) as listening:
        reader, writer = await asyncio.open_connection(*listening.endpoint)
        assert await closed_by_server(reader) == b""
        writer.close()
        assert listening.server.gate.no_tls == 1 and listening.server.gate.live == {}


async def trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                  data: bytes) -> int:
    """Send ``data`` a byte every 20 ms until the server closes; the bytes sent."""
    closed = asyncio.ensure_future(closed_by_server(reader))
    sent = 0
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while sent < len(data) and not closed.done():
            writer.write(data[sent:sent + 1])
            await writer.drain()
            sent += 1
            await asyncio.sleep(0.02)
    await closed
    writer.close()
    return sent


async def test_slowloris_clients_are_cut_at_the_preauth_deadline(pool: Pool) -> None:
    """A byte every 20 ms: the API and the host RPC cut the connection at their deadline."""
    credentials = api.frame({"secret": SECRET + b"x" * 2000})
    async with api_listener(pool, HASTY) as listening:
        reader, writer = await tls_connect(pool, listening.endpoint[1])
        sent = await trickle(writer, reader, credentials)
        assert sent < len(credentials)
        assert listening.server.refused == 1 and listening.host.calls == []
    stats = RpcStats(gate=ConnectionGate(HASTY))
    server = await rpc.serve(LOOPBACK, 0, KEY, echo, stats, target=rpc.target(HOSTS[0]))
    async with server:
        reader, writer = await asyncio.open_connection(LOOPBACK,
                                                       server.sockets[0].getsockname()[1])
        challenge = await reader.readexactly(CHALLENGE)
        frame = rpc.seal_frame(KEY, challenge, REQUEST, {"pad": "x" * 2000},
                               target=rpc.target(HOSTS[0]))
        assert await trickle(writer, reader, frame) < len(frame)
    assert stats.bad_requests == 1 and "no complete request within" in stats.last_bad_request


async def test_an_authenticated_client_that_stalls_its_request_is_cut(pool: Pool) -> None:
    async with api_listener(pool, HASTY) as listening:
        reader, writer = await tls_connect(pool, listening.endpoint[1])
        writer.write(api.frame({"secret": SECRET}))
        assert await api.read_message(reader) == {"authenticated": True}
        sent = await trickle(writer, reader, api.frame({"verb": "status", "pad": "x" * 2000}))
        assert listening.server.refused == 1 and listening.host.calls == []
        assert sent < 2000


# ---------------------------------------------------------------- RPC bound to its target


async def echo(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "echo": request}


@dataclass
class Agents:
    """Hosts B and C of one pool, each an agent on its own RPC server, recording requests."""

    servers: dict[str, tuple[Listener, RpcStats]] = field(default_factory=dict)
    seen: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    async def start(self, index: int) -> int:
        name = HOSTS[index]
        self.seen[name] = []

        async def record(request: dict[str, Any]) -> dict[str, Any]:
            self.seen[name].append(request)
            return {"ok": True}

        stats = RpcStats()
        server = await rpc.serve(LOOPBACK, 0, KEY, record, stats, target=rpc.target(HOSTS[index]))
        self.servers[name] = (server, stats)
        return int(server.sockets[0].getsockname()[1])


async def forwarding_proxy(to_port: int) -> asyncio.Server:
    """A key-less man in the middle: passes bytes both ways between a caller and ``to_port``."""

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(LOOPBACK, to_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(relay, LOOPBACK, 0)


async def test_an_rpc_request_forwarded_to_another_host_is_refused_there() -> None:
    """Finding 6: the master's ``shutdown`` for host B, forwarded by a proxy to host C,
    ran on C. Now it fails to open at C (counted), and the master hears nothing ran."""
    agents = Agents()
    await agents.start(1)
    c_port = await agents.start(2)
    proxy = await forwarding_proxy(c_port)
    async with proxy:
        with pytest.raises(RpcError, match="closed without answering"):
            await rpc.call(LOOPBACK, proxy.sockets[0].getsockname()[1], KEY,
                           {"op": "shutdown"}, 5, target=rpc.target(HOSTS[1]))
        # a request for another host (its uuid; the pool is the RPC key's) does not open
        with pytest.raises(RpcError, match="closed without answering"):
            await rpc.call(LOOPBACK, c_port, KEY, {"op": "shutdown"}, 5,
                           target=rpc.target("host-x"))
        assert await rpc.call(LOOPBACK, c_port, KEY, {"op": "list"}, 5,
                              target=rpc.target(HOSTS[2])) == {"ok": True}
    assert agents.seen == {"host-b": [], "host-c": [{"op": "list"}]}
    c_stats = agents.servers["host-c"][1]
    assert c_stats.bad_requests == 2 and "wrong target" in c_stats.last_bad_request
    for server, _ in agents.servers.values():
        server.close()


# ---------------------------------------------------------------- nothing escapes


@dataclass
class UnrulyHost(FakeHost):
    """A master whose answers to some verbs cannot be sent or whose handling breaks."""

    async def answer(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(call)
        if call.verb == "host-list":
            yield {"ok": True, "result": "x" * (rpc.MAX_FRAME + 1)}  # too large a frame
        elif call.verb == "vm-list":
            yield {"ok": True, "result": {1, 2}}  # a set does not pack
        elif call.verb == "message-list":
            raise KeyError("a bug reached by a request")
        else:
            yield {"ok": True, "result": self.result}


async def test_answers_that_cannot_be_sent_and_broken_calls_are_answered(pool: Pool) -> None:
    """Finding 4 of the brief: before, each of these closed the connection without a word."""
    async with api_listener(pool, host=UnrulyHost("fine")) as listening:
        for verb, error in (("host-list", "the answer cannot be sent: a message of"),
                            ("vm-list", "the answer cannot be sent"),
                            ("message-list", "the call failed on this host (KeyError")):
            with pytest.raises(api.ApiError, match=error.replace("(", r"\(")):
                await api.call([listening.endpoint], client_context(pool.ca.cert), SECRET,
                               Call(verb))
        assert listening.server.failed == 1 and listening.server.gate.escaped == 0


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False, float("nan"), -1, 2**64 - 1, -(2**63)])
    if kind == 1:
        return rng.randint(-(2**40), 2**40)
    if kind == 2:
        return "".join(rng.choice("ab:-=\x00é") for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.randbytes(rng.randrange(12))
    if kind == 4:
        return rng.choice([*VERBS, "status", "", "x" * 300])
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(random_value(rng, depth + 1))[:20]: random_value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


@dataclass(frozen=True)
class RawCall(Call):
    """A request sent as it is, of any shape: the server must not trust the client's checks."""

    raw: dict[str, Any] = field(default_factory=dict)

    def message(self) -> dict[str, object]:
        return dict(self.raw)


def random_call(rng: random.Random) -> Call:
    shape = rng.random()
    params = {} if shape < 0.5 else random_value(rng) if shape < 0.6 else {
        rng.choice(["uuid", "params", "param-name", "other-config:x", "since", "x"]):
        random_value(rng) for _ in range(rng.randrange(3))}
    raw = {"verb": rng.choice([*VERBS, *VERBS, random_value(rng)]), "params": params,
           "flags": random_value(rng) if rng.random() < 0.1 else []}
    return RawCall("fuzz", raw=raw)


async def test_seeded_fuzz_never_makes_a_listener_raise(pool: Pool) -> None:
    """Random bytes, random frames and random authenticated requests (seed 1212): every
    authenticated request gets a final answer, and no handler lets an exception out."""
    rng = random.Random(1212)
    async with api_listener(pool, host=UnrulyHost("fine")) as listening:
        port = listening.endpoint[1]
        for _ in range(150):  # authenticated calls of random shape: each gets its answer
            answers = [answer async for answer in api.exchange(
                [listening.endpoint], client_context(pool.ca.cert), SECRET, random_call(rng))]
            assert isinstance(answers[-1].get("ok"), bool), answers
        for _ in range(60):  # random credentials, random frames
            reader, writer = await tls_connect(pool, port)
            credentials = {"secret": random_value(rng), "caller": random_value(rng)}
            garbage = rng.randbytes(rng.randrange(1, 64))
            writer.write(api.frame(credentials) if rng.random() < 0.7
                         else LENGTH.pack(len(garbage)) + garbage)
            assert "ok" in await api.read_message(reader)
            writer.close()
        for _ in range(20):  # not even TLS
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(rng.randbytes(rng.randrange(1, 600)))
            await closed_by_server(reader)
        assert listening.server.gate.escaped == 0
        assert listening.server.failed >= 1  # the fuzz reached the broken handler
    agent = Agent(SimDriver(memory=4096))
    server = await agent.serve(LOOPBACK, 0, KEY, rpc.target(HOSTS[0]))
    async with server:
        port = server.sockets[0].getsockname()[1]
        for _ in range(60):
            request = {"op": rng.choice(["list", "start", "stop", random_value(rng)]),
                       **{k: random_value(rng) for k in ("since", "vm", "memory", "command")
                          if rng.random() < 0.6}}
            answer = await rpc.call(LOOPBACK, port, KEY, request, 5,
                                    target=rpc.target(HOSTS[0]))
            assert isinstance(answer.get("ok"), bool)
        for _ in range(20):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            await reader.readexactly(CHALLENGE)
            body = rng.randbytes(rng.randrange(1, 200))
            writer.write(LENGTH.pack(len(body)) + body)
            assert await closed_by_server(reader) == b""
    assert agent.stats.gate.escaped == 0 and agent.stats.bad_requests == 20


async def test_a_call_remembers_the_network_that_took_it(pool: Pool) -> None:
    """A first endpoint that takes TCP and never finishes TLS (a network swallowing
    packets) is tried once: with a path memory the next calls go to the working one."""
    hole, paths = BlackHole(), PathMemory()
    silent = await hole.listen(LOOPBACK)
    async with silent, api_listener(pool) as listening:
        endpoints = [(LOOPBACK, BlackHole.port(silent)), listening.endpoint]
        for _ in range(4):
            answers = [a async for a in api.exchange(endpoints, client_context(pool.ca.cert),
                                                     SECRET, Call("status"), paths=paths)]
            assert answers[-1]["ok"] is True
            await asyncio.sleep(0)
    assert hole.accepted == 1 and paths.order(endpoints)[0] == listening.endpoint
