"""Simulated UDP between hosts: loss, duplication, delay, reordering, cuts.

Rules: every packet is judged on its own; a directed link ``(src, dst)`` that
is cut drops everything; otherwise a packet is dropped with ``loss``, else
delivered once (twice with ``duplicate``) after ``delay`` plus uniform
``jitter``, so jitter larger than the send interval reorders packets. A
connection (the agents' RPC) works while neither direction is cut.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class NetworkConditions:
    loss: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0005
    jitter: float = 0.001


@dataclass
class SimNetwork:
    rng: random.Random
    conditions: NetworkConditions = field(default_factory=NetworkConditions)
    cut: set[tuple[int, int]] = field(default_factory=set)

    def deliveries(self, src: int, dst: int) -> list[float]:
        """Delays after which copies of one packet from ``src`` reach ``dst``."""
        if (src, dst) in self.cut:
            return []
        c = self.conditions
        if c.loss and self.rng.random() < c.loss:
            return []
        copies = 2 if c.duplicate and self.rng.random() < c.duplicate else 1
        return [c.delay + self.rng.random() * c.jitter for _ in range(copies)]

    def reachable(self, a: int, b: int) -> bool:
        """Whether a connection (RPC over TCP) between ``a`` and ``b`` works:
        neither direction cut (loss is retransmitted away)."""
        return (a, b) not in self.cut and (b, a) not in self.cut

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Cut every link between hosts of different groups, both ways."""
        sets = [set(g) for g in groups]
        for a in sets:
            for b in sets:
                if a is not b:
                    self.cut |= {(x, y) for x in a for y in b}

    def isolate(self, host: int, hosts: int) -> None:
        self.partition([[host], [h for h in range(hosts) if h != host]])

    def drop_from(self, src: int, dst: int) -> None:
        """One-way: packets from ``src`` no longer reach ``dst``."""
        self.cut.add((src, dst))

    def heal(self) -> None:
        self.cut.clear()
