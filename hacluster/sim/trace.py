"""The simulator's timeline: what happened, when, on which host.

Rules: times are the simulator's true time in seconds; runs of consecutive
heartbeats of one host are folded into one line when printed; a bounded trace
keeps only its most recent events (enough to explain a violation).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class TraceEvent:
    time: float
    host: int | None
    kind: str
    text: str

    def line(self) -> str:
        who = f"host {self.host}" if self.host is not None else "sim"
        return f"{self.time:9.3f}s  {who:<8} {self.kind:<9} {self.text}"


class Trace:
    def __init__(self, keep: int | None = None, beats: bool = False) -> None:
        self.events: deque[TraceEvent] = deque(maxlen=keep)
        self.beats = beats

    def record(self, time: float, host: int | None, kind: str, text: str) -> None:
        self.events.append(TraceEvent(time, host, kind, text))

    def of_kind(self, kind: str) -> list[TraceEvent]:
        return [e for e in self.events if e.kind == kind]

    def lines(self, last: int | None = None) -> list[str]:
        events = list(self.events)
        if last is not None:
            events = events[-last:]
        return list(fold_beats(events))


def fold_beats(events: Iterable[TraceEvent]) -> Iterable[str]:
    """Print events, folding each host's heartbeats between two other events."""
    pending: dict[int | None, list[TraceEvent]] = {}

    def flush() -> Iterable[str]:
        for host, run in sorted(pending.items(), key=lambda item: item[1][0].time):
            first, last = run[0], run[-1]
            if len(run) == 1:
                yield first.line()
            else:
                yield (f"{first.time:9.3f}s  host {host!s:<3} BEAT      "
                       f"{len(run)} heartbeats sent until {last.time:.3f}s")
        pending.clear()

    for event in events:
        if event.kind == "BEAT":
            pending.setdefault(event.host, []).append(event)
            continue
        yield from flush()
        yield event.line()
    yield from flush()
