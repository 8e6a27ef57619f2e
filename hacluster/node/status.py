"""The node's status socket: a Unix socket that answers every connection with JSON.

Rules: the server writes the node's status (one JSON object and a newline)
and closes; it reads nothing, so a client cannot make it wait. The status is
gathered by an async callable (the liveness part is asked of its own loop). A client that
gets no JSON (the node died while accepting) raises ``ConnectionError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


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
