"""Reaching a host on the first of its addresses that answers.

Rules:

* :func:`first_open` tries ``endpoints`` in order, staggered: the next one
  starts ``delay`` seconds after the one before, or at once when every
  attempt started so far has failed. The first to open wins; every other
  attempt is cancelled, or closed if it opened too.
* Opening is the caller's: what counts as open (a TCP connection, a TLS
  handshake, a challenge read) is decided by ``open_one``, so nothing is
  ever *sent* over more than one path.
* If every attempt fails, the first endpoint's error is raised (the one the
  operator expects to work).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

E = TypeVar("E")
T = TypeVar("T")


async def first_open(endpoints: Sequence[E], open_one: Callable[[E], Awaitable[T]],
                     close: Callable[[T], Awaitable[None]], delay: float) -> tuple[int, T]:
    """The index of the first of ``endpoints`` to open, and what ``open_one`` made of it."""
    if not endpoints:
        raise OSError("no address to reach")
    waiting = list(enumerate(endpoints))
    tries: dict[asyncio.Task[T], int] = {}
    errors: dict[int, BaseException] = {}
    try:
        while True:
            if waiting:
                index, endpoint = waiting.pop(0)
                tries[asyncio.ensure_future(open_one(endpoint))] = index
            pending = [task for task in tries if not task.done()]
            if not pending and not waiting:
                raise errors[min(errors)]
            if pending:
                done, _ = await asyncio.wait(pending, timeout=delay if waiting else None,
                                             return_when=asyncio.FIRST_COMPLETED)
            else:
                done = set()
            for task in done:
                error = task.exception()
                if error is None:
                    index = tries.pop(task)
                    return index, task.result()
                errors[tries[task]] = error
    finally:
        for task in tries:
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is None:
                await close(task.result())
