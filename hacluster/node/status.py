"""The node's status socket: a Unix socket that answers every connection with JSON.

Rules: the server writes the node's status (one JSON object and a newline)
and closes; it reads nothing, so a client cannot make it wait. The status is
gathered by an async callable (the liveness part is asked of its own loop). A client that
gets no JSON (the node died while accepting) raises ``ConnectionError``.

Every reader of the status (this socket, the HTTP face) shares one
:class:`SharedStatus`: a status at most :data:`STATUS_TTL` old is reused, and
callers that ask while one is being taken wait for that one, so no number
of readers makes the liveness loop take more than one snapshot per
:data:`STATUS_TTL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

STATUS_TTL = 0.5  # seconds a status is reused for


class SharedStatus:
    """One status for every reader: reused while fresh, taken once when asked together."""

    def __init__(self, take: Callable[[], Awaitable[dict[str, Any]]],
                 clock: Callable[[], float], ttl: float = STATUS_TTL) -> None:
        self.take = take
        self.clock = clock
        self.ttl = ttl
        self.taken = 0  # snapshots taken (for tests and curious operators)
        self._latest: tuple[float, dict[str, Any]] | None = None
        self._taking: asyncio.Future[dict[str, Any]] | None = None

    async def __call__(self) -> dict[str, Any]:
        if self._latest is not None and self.clock() - self._latest[0] < self.ttl:
            return self._latest[1]
        if self._taking is None:
            self._taking = asyncio.ensure_future(self._take())
        return await asyncio.shield(self._taking)

    async def _take(self) -> dict[str, Any]:
        try:
            status = await self.take()
            self.taken += 1
            self._latest = (self.clock(), status)
            return status
        finally:
            self._taking = None


async def serve_status(path: Path,
                       status: Callable[[], Awaitable[dict[str, Any]]]) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(await status()).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(answer, path=str(path))


def query_status(socket_path: Path, timeout: float = 2.0) -> dict[str, Any]:
    """Read one node's status from its Unix socket; an ``OSError`` if it does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(socket_path))
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    try:
        status: dict[str, Any] = json.loads(data)
    except ValueError:
        # a node dying while it accepts closes without a word: it is not answering
        raise ConnectionError(f"{socket_path}: the node closed without a status "
                              f"({len(data)} bytes)") from None
    return status
