"""Latencies, lags and durations, kept cheaply for the node's metrics.

Rules:

* A :class:`Samples` keeps, since the node started, how many values it saw,
  their sum and the largest; and the last :data:`WINDOW` values, for
  quantiles. Adding a value is O(1) (a deque append and three updates), so
  the liveness loop records on its hot path. The owner hands a reader a
  :meth:`Samples.copy` (one copy of the window) and the reader sorts it for
  the quantiles on its own loop: a scrape never sorts on the liveness loop.
* A quantile is the nearest-rank one of the window: the value below which
  that fraction of the window lies (the largest value for 1.0). An empty
  window has no quantile (``None``), never a made-up zero.
* :class:`FaultTimeline` keeps the last fault's steps with wall-clock times
  (people read them beside other logs), bounded in length.
* :class:`LoopLag` measures how late an event loop runs its callbacks: it
  asks to be woken every :data:`LAG_PROBE` seconds and records how much
  later than asked it was (a busy or stuck loop shows here first).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Any

WINDOW = 1024  # the values a quantile is taken over
LAG_PROBE = 0.25  # seconds between two probes of a loop's lag
QUANTILES = (0.5, 0.99)
TIMELINE_STEPS = 32  # the steps a fault timeline keeps


class Samples:
    """Values of one kind (seconds, usually): totals since start, quantiles of the latest."""

    def __init__(self, window: int = WINDOW) -> None:
        self.count = 0
        self.total = 0.0
        self.largest = 0.0
        self.recent: deque[float] = deque(maxlen=window)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.largest = max(self.largest, value)
        self.recent.append(value)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q`` quantile of the window (``0 < q <= 1``); None if empty."""
        return _nearest_rank(sorted(self.recent), q)

    def copy(self) -> Samples:
        """The same figures, apart from this one: cheap (one copy of the window), so the
        owning loop hands them over and the reader sorts them on its own time."""
        twin = Samples(self.recent.maxlen or WINDOW)
        twin.count, twin.total, twin.largest = self.count, self.total, self.largest
        twin.recent.extend(self.recent)
        return twin

    def summary(self) -> dict[str, Any]:
        """For the status and the metrics: count, sum, max and the :data:`QUANTILES`
        (the window sorted once)."""
        ordered = sorted(self.recent)
        return {"count": self.count, "sum": round(self.total, 6), "max": round(self.largest, 6),
                **{f"p{round(q * 100)}": _rounded(_nearest_rank(ordered, q)) for q in QUANTILES}}


def _nearest_rank(ordered: list[float], q: float) -> float | None:
    if not 0 < q <= 1:
        raise ValueError(f"a quantile is in (0, 1], not {q}")
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class LoopLag:
    """How late the running loop wakes: :meth:`run` records, forever, every
    :data:`LAG_PROBE` seconds, the lateness of its last wake."""

    def __init__(self, every: float = LAG_PROBE) -> None:
        self.every = every
        self.samples = Samples()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.every
            await asyncio.sleep(self.every)
            self.samples.add(max(0.0, loop.time() - asked))


class FaultTimeline:
    """The last fault seen here, step by step: when it began (this host left
    NORMAL), each phase change and commit with its wall-clock time, and when
    it ended (NORMAL again). A new fault replaces the last one; a fault keeps
    at most :data:`TIMELINE_STEPS` steps (the first ones, which explain it)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.steps: list[dict[str, Any]] = []
        self.ended: float | None = None
        self.under_way = False

    def began(self, text: str) -> None:
        self.steps, self.ended, self.under_way = [], None, True
        self.step(text)

    def step(self, text: str) -> None:
        if self.under_way and len(self.steps) < TIMELINE_STEPS:
            self.steps.append({"time": self.clock(), "text": text})

    def end(self, text: str) -> None:
        self.step(text)
        if self.under_way:
            self.ended, self.under_way = self.clock(), False

    def view(self) -> dict[str, Any] | None:
        return {"steps": list(self.steps), "ended": self.ended} if self.steps else None
