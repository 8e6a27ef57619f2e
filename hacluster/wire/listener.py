"""What every TCP listener of a host (management API, host RPC) admits, and for how long.

Rules:

* A connection is admitted only while its listener holds fewer than
  ``connections`` and its peer address fewer than ``per_peer``; otherwise it
  is aborted at once, before any TLS or frame work, and counted in
  :attr:`ConnectionGate.turned_away`. The numbers come from the physics of a
  host: a daemon runs with a descriptor limit of 1,024 (the usual soft
  limit) and needs some for the SR, the heartbeat sockets, its logs, backups
  and every VM's pipes; two listeners of 256 take half. A legitimate peer
  address holds few connections at once: hactl makes one per call, a host
  relays the calls it got, the master keeps at most
  :data:`CALLS_PER_PEER` calls in flight to one agent, so 16 per address
  leaves room while one hostile address cannot take a listener's 256.
* A peer that has not proven itself gets ``preauth`` seconds from being
  accepted (TLS handshake included) to send its credentials; an
  authenticated request must then arrive within ``request`` seconds. A
  legitimate client does either in milliseconds on a LAN, in well under a
  second across a WAN; 5 s and 10 s leave ample room while a hostile one
  cannot hold a slot longer.
* A connection handler never lets an exception escape: :func:`guarded`
  counts one that would (:attr:`ConnectionGate.escaped`, a bug to fix; the
  adversarial suite asserts none) and always releases the slot and closes
  the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

CALLS_PER_PEER = 8  # what a well-behaved client keeps in flight to one listener


@dataclass(frozen=True)
class ListenerLimits:
    connections: int = 256  # at once, per listener
    per_peer: int = 16  # at once, per peer address
    preauth: float = 5.0  # s from accept to proven credentials (TLS handshake included)
    request: float = 10.0  # s for an authenticated peer to send its request


@dataclass
class ConnectionGate:
    """The live connections of one listener, by peer address, and what it turned away."""

    limits: ListenerLimits = field(default_factory=ListenerLimits)
    turned_away: int = 0  # connections over a cap, aborted unread
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

    def leave(self, peer: str) -> None:
        self.live[peer] -= 1
        if self.live[peer] <= 0:
            del self.live[peer]


def peer_address(writer: asyncio.StreamWriter) -> str:
    """The peer's IP address as the socket reports it ("" if it already went away)."""
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


LINGER = 1.0  # s a closing connection may take to say goodbye (TLS close_notify)


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close a connection; a peer that already went away (or broke TLS) is no error. The
    wait is bounded: after a TLS handshake that failed or was cut, the stream never hears
    that its transport closed, and a task waiting for that would never end."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        async with asyncio.timeout(LINGER):
            await writer.wait_closed()


def guarded(gate: ConnectionGate, handler: ConnectionHandler) -> ConnectionHandler:
    """``handler`` behind ``gate``: over a cap a connection is aborted at once; an
    admitted one always releases its slot and is closed, whatever the handler does."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_address(writer)
        if not gate.enter(peer):
            writer.transport.abort()  # no TLS, no read, no buffer: the descriptor is freed now
            return
        try:
            await handler(reader, writer)
        except Exception as error:  # the last line: nothing from a peer escapes a listener
            gate.escaped += 1
            gate.last_escaped = f"{type(error).__name__}: {error}"
        finally:
            gate.leave(peer)
            await close_quietly(writer)

    return connection



async def start_listener(gate: ConnectionGate, handler: ConnectionHandler, host: str,
                         port: int, buffer: int = 1 << 16) -> asyncio.Server:
    """A plain TCP listener running ``handler`` behind ``gate``; TLS, if any, is the
    handler's to start after admission (``writer.start_tls``), so a connection over a
    cap costs no handshake. A connection stops reading from its socket while more than
    twice ``buffer`` bytes wait unread (asyncio's stream limit), so a peer that sends
    more than it may costs no more memory than that."""
    return await asyncio.start_server(guarded(gate, handler), host, port, limit=buffer)
