"""Authenticated request/response between hosts over TCP, keyed by the pool key.

Rules:

* The RPC key is the pool key's derived key for RPC (:mod:`hacluster.wire.keys`,
  ``Purpose.RPC``), so RPC frames can never be mistaken for reports. Both ends
  hold a :class:`~hacluster.wire.keys.KeyRing`: a frame is sealed with the
  current key and opened with either accepted key, so hosts a rotation step
  apart still talk. The server asks its ring source at every connection, so a
  rotation step takes effect without a restart.
* One request per connection. The server opens with a fresh 16-byte random
  challenge; the client sends one frame, the server answers one frame, and
  the connection closes. A frame is a 4-byte big-endian length, then a
  12-byte random nonce and the ChaCha20-Poly1305 ciphertext of a msgpack map.
* The associated data is the challenge, the direction (``request`` or
  ``response``) and the target (:func:`target`: the pool, as the digest of
  its hosts' uuids in HA order, and the host the request is for, by index and
  uuid): a frame opens only on the connection it was made for, in its own
  direction and at the host it was meant for, so a captured request replayed
  on another connection, reflected back as a reply, or forwarded by a
  key-less proxy to another host (or another pool's host) fails to open.
* The length is checked before the body is read: a request is at most
  :data:`MAX_REQUEST` bytes (it is read before it is authenticated, so 256
  connections hold at most 16 MiB), an answer at most :data:`MAX_FRAME`.
  Bodies are decoded by :func:`hacluster.wire.unpack.unpack` (bounded, strict).
* The listener admits connections through a
  :class:`~hacluster.wire.listener.ConnectionGate` (caps per listener and per
  peer address; over them a connection is aborted at once); a client has
  ``limits.preauth`` seconds from being accepted to send its request.
* A request that fails to open (wrong key, wrong target, replay, garbage,
  oversized, too slow) gets no answer, reaches no handler and is counted in
  :class:`RpcStats`.
* A host on several networks is called on all of its addresses
  (:func:`call_any`): the first network is tried first (or, given a
  :class:`~hacluster.wire.dial.PathMemory`, the one that answered last), the
  next one :data:`NEXT_PATH_DELAY` later or as soon as the first fails; the
  request is sent over the first connection whose challenge arrives, and only
  over it, so a cut network costs a call that much, once with a path memory,
  and never sends twice.
* A handler exception, or an answer that cannot be sent (too large, not
  packable), becomes ``{"ok": False, "error": message}``. A client failure of
  any kind raises :class:`RpcError` saying what went wrong.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hacluster.wire.dial import PathMemory, first_open
from hacluster.wire.keys import KeyRing, Keys, Purpose, aead, as_ring
from hacluster.wire.listener import ConnectionGate, Listener, close_quietly, start_listener
from hacluster.wire.unpack import Malformed, unpack

CHALLENGE = 16
NONCE = 12
TAG = 16
LENGTH = struct.Struct(">I")
MAX_FRAME = 1 << 20  # an answer: a pool's status or an agent's list of exits
NEXT_PATH_DELAY = 0.25  # seconds before a call also tries a host's next network
MAX_REQUEST = 64 << 10  # a request: a verb's text parameters, a VM's command and environment
REQUEST = b"request"
RESPONSE = b"response"

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
KeySource = Keys | Callable[[], KeyRing]  # a fixed ring or key, or where to read the ring


class RpcError(RuntimeError):
    """A call that did not get a valid answer, and why."""


class FrameError(ValueError):
    """A frame that must not be trusted: counted and dropped by the server."""


class ClosedBeforeFrame(FrameError):
    """The peer closed the connection without sending a frame."""


@dataclass
class RpcStats:
    """What one listener answered and refused; its ``gate`` holds its caps, deadlines
    and the connections it turned away."""

    answered: int = 0
    bad_requests: int = 0
    last_bad_request: str = ""
    gate: ConnectionGate = field(default_factory=ConnectionGate)

    def bad(self, reason: str) -> None:
        self.bad_requests += 1
        self.last_bad_request = reason

    def counts(self) -> dict[str, int | str]:
        """For status displays."""
        return {**self.gate.counts(), "answered": self.answered,
                "bad_requests": self.bad_requests, "last_bad_request": self.last_bad_request}


def rpc_aead(keys: Keys) -> ChaCha20Poly1305:
    """The cipher that seals RPC: the current pool key's derived key (never the key itself)."""
    return aead(as_ring(keys).sealing(Purpose.RPC))


def _ring(keys: KeySource) -> KeyRing:
    return as_ring(keys() if callable(keys) else keys)


def target(host_uuid: str) -> bytes:
    """What a request is bound to: its target host (the pool is the RPC key's own:
    a frame sealed for another pool does not open). Not the pool's host list,
    which joins and ejects change while calls go on."""
    return f"host {host_uuid}".encode()


def _bound(direction: bytes) -> int:
    return MAX_REQUEST if direction == REQUEST else MAX_FRAME


def seal_frame(keys: Keys, challenge: bytes, direction: bytes,
               message: dict[str, Any], *, target: bytes) -> bytes:
    """A length-prefixed frame carrying ``message`` for this connection, direction and
    target, sealed with the current key; ``ValueError`` if it exceeds its direction's
    bound, ``TypeError`` if ``message`` does not pack."""
    nonce = os.urandom(NONCE)
    body = nonce + rpc_aead(keys).encrypt(nonce, msgpack.packb(message, use_bin_type=True),
                                challenge + direction + target)
    if len(body) > _bound(direction):
        raise ValueError(f"a {direction.decode()} of {len(body)} bytes exceeds "
                         f"{_bound(direction)}")
    return LENGTH.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, minimum: int = NONCE + TAG,
                     maximum: int = MAX_FRAME) -> bytes:
    """One frame's body; its announced length is checked before anything more is read."""
    try:
        prefix = await reader.readexactly(LENGTH.size)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise FrameError("connection closed in the middle of a frame") from None
        raise ClosedBeforeFrame("connection closed before a frame") from None
    (length,) = LENGTH.unpack(prefix)
    if not minimum <= length <= maximum:
        raise FrameError(f"frame length {length} outside [{minimum}, {maximum}]")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError("connection closed in the middle of a frame") from None


def open_frame(keys: Keys, challenge: bytes, direction: bytes,
               body: bytes, *, target: bytes) -> dict[str, Any]:
    """The message of a frame body, or :class:`FrameError` if it is not authentic (under
    either key, for this connection, direction and target) and sane."""
    if not NONCE + TAG <= len(body) <= _bound(direction):
        raise FrameError(f"a {direction.decode()} of {len(body)} bytes is outside "
                         f"[{NONCE + TAG}, {_bound(direction)}]")
    data = challenge + direction + target
    try:
        plain = as_ring(keys).open_with(
            Purpose.RPC, lambda key: aead(key).decrypt(body[:NONCE], body[NONCE:], data),
            InvalidTag)
    except InvalidTag:
        raise FrameError("authentication failed (wrong key, wrong target host or pool, "
                         "replayed or tampered)") from None
    return decode_message(plain, _bound(direction))


def decode_message(plain: bytes, limit: int = MAX_FRAME) -> dict[str, Any]:
    """A msgpack map with string keys, decoded within ``limit`` bytes, or :class:`FrameError`."""
    try:
        message = unpack(plain, limit)
    except Malformed as error:
        raise FrameError(f"malformed body: {error}") from None
    if not isinstance(message, dict) or not all(isinstance(k, str) for k in message):
        raise FrameError("body is not a map with string keys")
    return message


def _short(error: BaseException, limit: int = 1000) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


async def serve(host: str, port: int, keys: KeySource, handler: Handler,
                stats: RpcStats | None = None, *, target: bytes) -> Listener:
    """Answer authenticated requests for ``target`` with ``handler``; count the rest in
    ``stats``, whose gate admits connections: a client has ``stats.gate.limits.preauth``
    seconds from being accepted to send its request. ``keys`` is read per connection.
    """
    counts = stats if stats is not None else RpcStats()
    deadline = counts.gate.limits.preauth

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ring = _ring(keys)
            challenge = os.urandom(CHALLENGE)
            writer.write(challenge)
            try:
                async with asyncio.timeout(deadline):
                    body = await read_frame(reader, maximum=MAX_REQUEST)
                request = open_frame(ring, challenge, REQUEST, body, target=target)
            except FrameError as error:
                counts.bad(str(error))
                return
            except TimeoutError:
                counts.bad(f"no complete request within {deadline} s")
                return
            try:
                response = await handler(request)
                ring = _ring(keys)  # the handler may have rotated the key
                reply = seal_frame(ring, challenge, RESPONSE, response, target=target)
            except Exception as error:  # a handler's failure, or an answer that cannot go
                reply = seal_frame(ring, challenge, RESPONSE,
                                   {"ok": False, "error": _short(error)}, target=target)
            writer.write(reply)
            await writer.drain()
            counts.answered += 1
        except ConnectionError:
            pass  # the client went away; nothing to answer

    return await start_listener(counts.gate, answer, host, port)


async def call(host: str, port: int, keys: Keys, request: dict[str, Any],
               timeout: float, *, target: bytes) -> dict[str, Any]:
    """Send ``request`` to ``target`` at ``host:port`` and return the answer, within
    ``timeout`` seconds (sealed with the current key; the answer opens with either)."""
    return await call_any([(host, port)], keys, request, timeout, target=target)


async def call_any(endpoints: Sequence[tuple[str, int]], keys: Keys, request: dict[str, Any],
                   timeout: float, *, target: bytes, paths: PathMemory | None = None,
                   first: tuple[str, int] | None = None) -> dict[str, Any]:
    """:func:`call` over the first of ``endpoints`` (one host's addresses, one per
    network) to answer: each is tried :data:`NEXT_PATH_DELAY` after the one before
    or as soon as it fails, and the request goes over the first connection whose
    challenge arrives, never over two. With ``paths``, ``first`` is tried first if
    given, else the address that answered last."""
    ring = as_ring(keys)
    where = " or ".join(f"{host}:{port}" for host, port in endpoints)
    try:
        async with asyncio.timeout(timeout):
            _, (reader, writer, challenge) = await first_open(
                endpoints, lambda endpoint: _open(*endpoint), _close, NEXT_PATH_DELAY,
                paths=paths, first=first)
            peer = writer.get_extra_info("peername")
            where = f"{peer[0]}:{peer[1]}" if peer else where
            try:
                try:
                    frame = seal_frame(ring, challenge, REQUEST, request, target=target)
                except (TypeError, ValueError) as error:
                    raise RpcError(f"{where}: request cannot be sent: {error}") from None
                writer.write(frame)
                await writer.drain()
                body = await read_frame(reader)
            finally:
                await close_quietly(writer)
    except TimeoutError:
        raise RpcError(f"{where}: no answer within {timeout} s") from None
    except ConnectionRefusedError:
        raise RpcError(f"{where}: connection refused (no agent listening?)") from None
    except asyncio.IncompleteReadError:
        raise RpcError(f"{where}: closed before the challenge") from None
    except ClosedBeforeFrame:
        raise RpcError(f"{where}: closed without answering; the server drops requests it "
                       "cannot authenticate: is the pool key right, and is this the host "
                       "of that address in the pool file?") from None
    except FrameError as error:
        raise RpcError(f"{where}: malformed reply: {error}") from None
    except OSError as error:
        raise RpcError(f"{where}: {error.strerror or error}") from None
    try:
        return open_frame(ring, challenge, RESPONSE, body, target=target)
    except FrameError as error:
        raise RpcError(f"{where}: reply rejected: {error}") from None


Opened = tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]


async def _close(opened: Opened) -> None:
    await close_quietly(opened[1])


async def _open(host: str, port: int) -> Opened:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        return reader, writer, await reader.readexactly(CHALLENGE)
    except BaseException:
        await close_quietly(writer)
        raise
