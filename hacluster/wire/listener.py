"""What every TCP listener of a host (management API, host RPC) admits, and for how long.

Rules:

* The listener accepts sockets itself and admits a connection only while it
  holds fewer than ``connections`` and its peer address fewer than
  ``per_peer``; otherwise the socket is closed at once, before a byte is read
  or any TLS work is done, and counted in :attr:`ConnectionGate.turned_away`.
  The numbers come from the physics of a host: a daemon runs with a
  descriptor limit of 1,024 (the usual soft limit) and needs some for the SR,
  the heartbeat sockets, its logs, backups and every VM's pipes; two
  listeners of 256 take half. A legitimate peer address holds few
  connections at once: hactl makes one per call, a host relays the calls it
  got, the master keeps at most :data:`CALLS_PER_PEER` calls in flight to one
  agent, so 16 per address leaves room while one hostile address cannot take
  a listener's 256.
* An admitted socket is handed to the event loop as it is
  (``connect_accepted_socket``), with TLS if the listener has a context, so
  the loop's TLS reads the client's first bytes (upgrading a stream that
  already read them would lose them: uvloop reads at once). The handshake
  must end within ``preauth`` seconds, or the connection is closed and
  counted in :attr:`ConnectionGate.no_tls`; the handler then has ``preauth``
  seconds for the credentials and ``request`` seconds for an authenticated
  request. A legitimate client does each in milliseconds on a LAN, well under
  a second across a WAN; 5 s and 10 s leave ample room while a hostile one
  cannot hold a slot longer.
* A stream stops reading from its socket while more than twice its
  ``buffer`` bytes wait unread, so a peer sending more than it may costs no
  more memory than that.
* The same admission, caps and handshake deadline serve a listener whose
  connections are an asyncio protocol of someone else's (the HTTP face's
  aiohttp server): :func:`start_protocol_listener`. Its slot is released
  when the protocol's connection is lost (:class:`_Tracked`); since such a
  protocol has no deadline of ours for its first request, a connection lives
  at most ``lifetime`` seconds, so a client trickling bytes holds a slot no
  longer than that.
* A connection handler never lets an exception escape: the listener counts
  one that would (:attr:`ConnectionGate.escaped`, a bug to fix; the
  adversarial suite asserts none) and always releases the slot and closes
  the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

CALLS_PER_PEER = 8  # what a well-behaved client keeps in flight to one listener
LINGER = 1.0  # s a closing connection may take to say goodbye (TLS close_notify)
BACKLOG = 128


@dataclass(frozen=True)
class ListenerLimits:
    connections: int = 256  # at once, per listener
    per_peer: int = 16  # at once, per peer address
    preauth: float = 5.0  # s for the TLS handshake, then again for the credentials
    request: float = 10.0  # s for an authenticated peer to send its request
    lifetime: float | None = None  # s a protocol listener's connection may last at most


@dataclass
class ConnectionGate:
    """The live connections of one listener, by peer address, and what it turned away."""

    limits: ListenerLimits = field(default_factory=ListenerLimits)
    turned_away: int = 0  # connections over a cap, closed unread
    no_tls: int = 0  # connections whose TLS handshake failed or did not end in time
    escaped: int = 0  # exceptions a handler let out (a bug): caught here, counted
    last_escaped: str = ""
    live: Counter[str] = field(default_factory=Counter)

    def enter(self, peer: str) -> bool:
        """Take a slot for a connection from ``peer``; False (and counted) over a cap."""
        if (sum(self.live.values()) >= self.limits.connections
                or self.live[peer] >= self.limits.per_peer):
            self.turned_away += 1
            return False
        self.live[peer] += 1
        return True

    def counts(self) -> dict[str, int | str]:
        """For status displays: live connections and what was turned away."""
        return {"live": sum(self.live.values()), "turned_away": self.turned_away,
                "no_tls": self.no_tls, "escaped": self.escaped,
                "last_escaped": self.last_escaped}

    def leave(self, peer: str) -> None:
        self.live[peer] -= 1
        if self.live[peer] <= 0:
            del self.live[peer]


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close a connection; a peer that already went away (or broke TLS) is no error. The
    wait for the goodbye is bounded, so a task closing a connection always ends."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        async with asyncio.timeout(LINGER):
            await writer.wait_closed()


class _Tracked(asyncio.Protocol):
    """Another protocol, told everything, that also says when its connection ended."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self.inner = inner
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            if not self.ended.done():
                self.ended.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Listener(asyncio.AbstractServer):
    """One listening socket, its accept loop, and the connections it admitted: each
    served by ``handler`` on streams, or by a protocol from ``protocol``."""

    def __init__(self, sock: socket.socket, gate: ConnectionGate, handler: ConnectionHandler,
                 context: ssl.SSLContext | None, buffer: int,
                 protocol: Callable[[], asyncio.Protocol] | None = None) -> None:
        self._sock = sock
        self.gate = gate
        self._handler = handler
        self._protocol = protocol
        self._context = context
        self._buffer = buffer
        self._loop = asyncio.get_running_loop()
        self._connections: set[asyncio.Task[None]] = set()  # held: the loop keeps weak refs
        self._accepting = self._loop.create_task(self._accept())

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._sock.fileno() < 0 else (self._sock,)

    async def _accept(self) -> None:
        while True:
            try:
                sock, address = await self._loop.sock_accept(self._sock)
            except OSError:  # out of descriptors, or the peer reset before accept
                await asyncio.sleep(0.05)
                continue
            peer = str(address[0]) if isinstance(address, tuple) and address else ""
            if not self.gate.enter(peer):
                sock.close()  # nothing read, no TLS: the descriptor is freed now
                continue
            task = self._loop.create_task(self._serve(sock, peer))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, sock: socket.socket, peer: str) -> None:
        if self._protocol is not None:
            await self._serve_protocol(sock, peer, self._protocol)
            return
        try:
            streams = await self._open(sock)
            if streams is None:
                return
            reader, writer = streams
            try:
                await self._handler(reader, writer)
            except Exception as error:  # the last line: nothing from a peer escapes
                self.gate.escaped += 1
                self.gate.last_escaped = f"{type(error).__name__}: {error}"
            finally:
                await close_quietly(writer)
        finally:
            self.gate.leave(peer)

    async def _serve_protocol(self, sock: socket.socket, peer: str,
                              factory: Callable[[], asyncio.Protocol]) -> None:
        tracked: _Tracked | None = None

        def made() -> asyncio.Protocol:
            nonlocal tracked
            tracked = _Tracked(factory())
            return tracked

        try:
            transport = await self._connect(sock, made)
            if transport is None or tracked is None:
                return
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(tracked.ended), self.gate.limits.lifetime)
            finally:
                if not tracked.ended.done():  # its lifetime is over, or the listener closes
                    cast(asyncio.Transport, transport).abort()
        finally:
            self.gate.leave(peer)

    async def _connect(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol]
                       ) -> asyncio.BaseTransport | None:
        """The socket handed to the loop, TLS done if the listener has a context; None
        (closed, counted) if the handshake fails or does not end within ``preauth``."""
        deadline = self.gate.limits.preauth
        try:
            async with asyncio.timeout(deadline + 1):  # the loop's own timeout comes first
                transport, _ = await self._loop.connect_accepted_socket(
                    factory, sock, ssl=self._context,
                    ssl_handshake_timeout=deadline if self._context else None)
        except (OSError, TimeoutError):  # ssl.SSLError and ConnectionError are OSErrors
            self.gate.no_tls += 1
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise
        return transport

    async def _open(self, sock: socket.socket) -> tuple[asyncio.StreamReader,
                                                        asyncio.StreamWriter] | None:
        """The socket as streams (see :meth:`_connect`)."""
        reader = asyncio.StreamReader(limit=self._buffer)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport = await self._connect(sock, lambda: protocol)
        if transport is None:
            return None
        return reader, asyncio.StreamWriter(cast(asyncio.Transport, transport), protocol,
                                            reader, self._loop)

    # ------------------------------------------------------------ asyncio.AbstractServer
    def close(self) -> None:
        """Stop accepting and end every connection (a node closes its listeners to stop)."""
        self._accepting.cancel()
        self._sock.close()
        for connection in self._connections:
            connection.cancel()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return not self._accepting.done()

    async def start_serving(self) -> None:
        pass  # serving from creation

    async def serve_forever(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting

    async def wait_closed(self) -> None:
        await asyncio.gather(self._accepting, *self._connections, return_exceptions=True)


async def start_listener(gate: ConnectionGate, handler: ConnectionHandler, host: str,
                         port: int, context: ssl.SSLContext | None = None,
                         buffer: int = 1 << 16) -> Listener:
    """A listener on ``host:port`` running ``handler`` (with TLS under ``context``) for
    every connection ``gate`` admits."""
    return Listener(await _listening(host, port), gate, handler, context, buffer)


async def start_protocol_listener(gate: ConnectionGate, protocol: Callable[[], asyncio.Protocol],
                                  host: str, port: int,
                                  context: ssl.SSLContext | None = None) -> Listener:
    """A listener on ``host:port`` serving every connection ``gate`` admits with a
    protocol from ``protocol`` (with TLS under ``context``)."""
    return Listener(await _listening(host, port), gate, _no_streams, context, 0, protocol)


async def _no_streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    raise AssertionError("a protocol listener serves no streams")


async def _listening(host: str, port: int) -> socket.socket:
    """A non-blocking socket listening on ``host:port``."""
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror} "
                      "(another program, or another host of a lab, holds that port?)") from None
    return sock
