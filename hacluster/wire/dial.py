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
* Given a :class:`PathMemory`, the endpoint of a host that opened last
  (keyed by the host's endpoints) is tried first and the winner remembered,
  so a cut network costs its ``delay`` once, not at every call; the order is
  otherwise kept, and a path that fails costs the same delay the other way.
  A caller that knows better (where the host's heartbeats come in now) names
  the endpoint to try ``first`` instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

E = TypeVar("E")
T = TypeVar("T")


class PathMemory:
    """Which endpoint of each host opened last (see the rules)."""

    def __init__(self) -> None:
        self._last: dict[tuple[object, ...], object] = {}

    def order(self, endpoints: Sequence[E], first: E | None = None) -> list[E]:
        """``endpoints``, ``first`` first if given, else the one that opened last."""
        lead = first if first is not None else self._last.get(tuple(endpoints))
        return sorted(endpoints, key=lambda endpoint: endpoint != lead)

    def opened(self, endpoints: Sequence[E], endpoint: E) -> None:
        self._last[tuple(endpoints)] = endpoint


async def first_open(endpoints: Sequence[E], open_one: Callable[[E], Awaitable[T]],
                     close: Callable[[T], Awaitable[None]], delay: float, *,
                     paths: PathMemory | None = None,
                     first: E | None = None) -> tuple[int, T]:
    """The index in ``endpoints`` of the first to open, and what ``open_one`` made of it
    (with ``paths``: tried in its order, the winner remembered; see the rules)."""
    if paths is None:
        return await _race(endpoints, open_one, close, delay)
    tried = paths.order(endpoints, first)
    index, opened = await _race(tried, open_one, close, delay)
    paths.opened(endpoints, tried[index])
    return list(endpoints).index(tried[index]), opened


async def _race(endpoints: Sequence[E], open_one: Callable[[E], Awaitable[T]],
                close: Callable[[T], Awaitable[None]], delay: float) -> tuple[int, T]:
    """:func:`first_open` in the given order."""
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
