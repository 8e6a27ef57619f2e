"""Reaching a host on the first of its addresses that opens: staggered, single winner."""

from __future__ import annotations

import asyncio

import pytest

from hacluster.wire.dial import first_open

from ..conftest import LOOPTIME

pytestmark = LOOPTIME


class Paths:
    """Scripted endpoints: name -> (seconds to open, or None: fails at once)."""

    def __init__(self, script: dict[str, float | None]) -> None:
        self.script = script
        self.started: list[tuple[str, float]] = []
        self.closed: list[str] = []

    async def open_one(self, name: str) -> str:
        self.started.append((name, asyncio.get_running_loop().time()))
        wait = self.script[name]
        if wait is None:
            raise ConnectionRefusedError(f"{name} refused")
        await asyncio.sleep(wait)
        return name

    async def close(self, name: str) -> None:
        self.closed.append(name)


async def test_the_next_path_starts_after_the_delay_and_the_first_to_open_wins() -> None:
    paths = Paths({"a": 100.0, "b": 0.1, "c": 0.0})
    start = asyncio.get_running_loop().time()
    assert await first_open(["a", "b", "c"], paths.open_one, paths.close, 0.25) == (1, "b")
    assert [(n, round(t - start, 2)) for n, t in paths.started] == [("a", 0.0), ("b", 0.25)]
    assert paths.closed == []  # a was cancelled, c never started


async def test_a_refusal_moves_on_at_once() -> None:
    paths = Paths({"a": None, "b": 0.0})
    start = asyncio.get_running_loop().time()
    assert await first_open(["a", "b"], paths.open_one, paths.close, 10.0) == (1, "b")
    assert paths.started[1][1] - start < 0.01


async def test_two_that_open_together_keep_one_and_close_the_other() -> None:
    paths = Paths({"a": 0.3, "b": 0.05})  # both open at 0.3 s, in the same wait
    index, won = await first_open(["a", "b"], paths.open_one, paths.close, 0.25)
    assert won == ["a", "b"][index] and paths.closed == [{"a": "b", "b": "a"}[won]]


async def test_all_failing_raises_the_first_paths_error() -> None:
    paths = Paths({"a": None, "b": None})
    with pytest.raises(ConnectionRefusedError, match="a refused"):
        await first_open(["a", "b"], paths.open_one, paths.close, 0.25)
    with pytest.raises(OSError, match="no address"):
        await first_open([], paths.open_one, paths.close, 0.25)
