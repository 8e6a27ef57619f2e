"""Authenticated request/response between hosts over TCP, keyed by the pool key.

Rules:

* The RPC key is the pool key's derived key for RPC (:mod:`hacluster.wire.keys`,
  ``Purpose.RPC``), so RPC frames can never be mistaken for reports.
* One request per connection. The server opens with a fresh 16-byte random
  challenge; the client sends one frame, the server answers one frame, and
  the connection closes. A frame is a 4-byte big-endian length, then a
  12-byte random nonce and the ChaCha20-Poly1305 ciphertext of a msgpack map.
* The associated data is the challenge plus the direction (``request`` or
  ``response``): a frame opens only on the connection it was made for and in
  its own direction, so a captured request replayed on another connection, or
  reflected back as a reply, fails to open.
* The length is checked against :data:`MAX_FRAME` before the body is read.
  A request that fails to open (wrong key, replay, garbage, oversized, too
  slow) gets no answer, reaches no handler and is counted in :class:`RpcStats`.
* A handler exception becomes ``{"ok": False, "error": message}``. A client
  failure of any kind raises :class:`RpcError` saying what went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hacluster.wire.keys import Purpose, derive_key

CHALLENGE = 16
NONCE = 12
TAG = 16
LENGTH = struct.Struct(">I")
MAX_FRAME = 1 << 20
REQUEST = b"request"
RESPONSE = b"response"
REQUEST_DEADLINE = 10.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class RpcError(RuntimeError):
    """A call that did not get a valid answer, and why."""


class FrameError(ValueError):
    """A frame that must not be trusted: counted and dropped by the server."""


class ClosedBeforeFrame(FrameError):
    """The peer closed the connection without sending a frame."""


@dataclass
class RpcStats:
    answered: int = 0
    bad_requests: int = 0
    last_bad_request: str = ""

    def bad(self, reason: str) -> None:
        self.bad_requests += 1
        self.last_bad_request = reason


def rpc_aead(pool_key: bytes) -> ChaCha20Poly1305:
    """The cipher keyed for RPC, derived from (never equal to) the pool key."""
    return ChaCha20Poly1305(derive_key(pool_key, Purpose.RPC))


def seal_frame(aead: ChaCha20Poly1305, challenge: bytes, direction: bytes,
               message: dict[str, Any]) -> bytes:
    """A length-prefixed frame carrying ``message`` for this connection and direction."""
    nonce = os.urandom(NONCE)
    body = nonce + aead.encrypt(nonce, msgpack.packb(message, use_bin_type=True),
                                challenge + direction)
    if len(body) > MAX_FRAME:
        raise ValueError(f"a {direction.decode()} of {len(body)} bytes exceeds {MAX_FRAME}")
    return LENGTH.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, minimum: int = NONCE + TAG) -> bytes:
    """One frame's body; its announced length is checked before anything more is read."""
    try:
        prefix = await reader.readexactly(LENGTH.size)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise FrameError("connection closed in the middle of a frame") from None
        raise ClosedBeforeFrame("connection closed before a frame") from None
    (length,) = LENGTH.unpack(prefix)
    if not minimum <= length <= MAX_FRAME:
        raise FrameError(f"frame length {length} outside [{minimum}, {MAX_FRAME}]")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError("connection closed in the middle of a frame") from None


def open_frame(aead: ChaCha20Poly1305, challenge: bytes, direction: bytes,
               body: bytes) -> dict[str, Any]:
    """The message of a frame body, or :class:`FrameError` if it is not authentic and sane."""
    try:
        plain = aead.decrypt(body[:NONCE], body[NONCE:], challenge + direction)
    except InvalidTag:
        raise FrameError("authentication failed (wrong key, replayed or tampered)") from None
    return decode_message(plain)


def decode_message(plain: bytes) -> dict[str, Any]:
    """A msgpack map with string keys, or :class:`FrameError`."""
    try:
        message = msgpack.unpackb(plain, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        raise FrameError(f"malformed body: {error}") from None
    if not isinstance(message, dict) or not all(isinstance(k, str) for k in message):
        raise FrameError("body is not a map with string keys")
    return message


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close a connection; a peer that already went away (or broke TLS) is no error."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def serve(host: str, port: int, key: bytes, handler: Handler,
                stats: RpcStats | None = None,
                request_deadline: float = REQUEST_DEADLINE) -> asyncio.Server:
    """Answer authenticated requests with ``handler``; count the rest in ``stats``.

    A client has ``request_deadline`` seconds from connecting to send its request.
    """
    aead = rpc_aead(key)
    counts = stats if stats is not None else RpcStats()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            challenge = os.urandom(CHALLENGE)
            writer.write(challenge)
            try:
                async with asyncio.timeout(request_deadline):
                    request = open_frame(aead, challenge, REQUEST, await read_frame(reader))
            except FrameError as error:
                counts.bad(str(error))
                return
            except TimeoutError:
                counts.bad(f"no complete request within {request_deadline} s")
                return
            try:
                response = await handler(request)
                reply = seal_frame(aead, challenge, RESPONSE, response)
            except Exception as error:
                reply = seal_frame(aead, challenge, RESPONSE,
                                   {"ok": False, "error": str(error) or type(error).__name__})
            writer.write(reply)
            await writer.drain()
            counts.answered += 1
        except ConnectionError:
            pass  # the client went away; nothing to answer
        finally:
            await close_quietly(writer)

    return await asyncio.start_server(answer, host, port)


async def call(host: str, port: int, key: bytes, request: dict[str, Any],
               timeout: float) -> dict[str, Any]:
    """Send ``request`` to ``host:port`` and return the answer, within ``timeout`` seconds."""
    aead = rpc_aead(key)
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                challenge = await reader.readexactly(CHALLENGE)
                try:
                    frame = seal_frame(aead, challenge, REQUEST, request)
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
                       "cannot authenticate: is the pool key right?") from None
    except FrameError as error:
        raise RpcError(f"{where}: malformed reply: {error}") from None
    except OSError as error:
        raise RpcError(f"{where}: {error.strerror or error}") from None
    try:
        return open_frame(aead, challenge, RESPONSE, body)
    except FrameError as error:
        raise RpcError(f"{where}: reply rejected: {error}") from None
