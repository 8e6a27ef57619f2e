"""The simulator's true time: one queue of timed actions, run in order.

Rules:

* ``t`` is true time. An action scheduled in the past runs now; actions due at
  the same time run in the order they were scheduled.
* A host's own monotonic clock is ``offset + rate * t`` (:class:`HostClock`);
  what a host asks for at its local time runs at the first true time its
  clock reads it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass


class EventQueue:
    def __init__(self) -> None:
        self.t = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    def at(self, t: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(t, self.t), self._seq, action))

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0][0] <= end:
            t, _, action = heapq.heappop(self._queue)
            self.t = t
            action()
        self.t = max(self.t, end)


@dataclass
class HostClock:
    rate: float
    offset: float

    def local(self, t: float) -> float:
        return self.offset + self.rate * t

    def true_time(self, local: float) -> float:
        """The first true time at which this clock reads ``local`` or later."""
        t = (local - self.offset) / self.rate
        while self.local(t) < local:  # floating-point rounding
            t = math.nextafter(t, math.inf)
        return t
