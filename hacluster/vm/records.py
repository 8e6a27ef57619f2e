"""The records a guest writes to its disk, and the checker that reads them back.

Rules:

* A disk is a file of records, one JSON object per line:
  ``{"vm", "host", "instance", "seq", "time", "event"}``, with ``event`` one of
  ``start``, ``beat``, ``halt``, ``stop``. A line that is torn (no newline
  yet) or does not parse strictly is skipped and counted, never trusted.
* An *instance* is one run of a guest: every record carrying its random id.
  It lived from its first record's ``time`` to its last; it ended cleanly if
  its last record is ``halt`` (shut down from inside) or ``stop`` (asked to).
* Two instances of one VM whose lifetimes overlap are a *double run*: the VM
  ran twice at once, which the cluster must never allow.
* Times are the guests' wall clocks (``time.time()``); on one machine or
  with synchronised clocks they order runs across hosts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENTS = ("start", "beat", "halt", "stop")
ENDINGS = ("halt", "stop")
TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class Record:
    vm: str
    host: str
    instance: str
    seq: int
    time: float
    event: str

    def to_line(self) -> bytes:
        """The record as one newline-terminated line, ready for a single write."""
        fields = {"vm": self.vm, "host": self.host, "instance": self.instance,
                  "seq": self.seq, "time": self.time, "event": self.event}
        return (json.dumps(fields, separators=(",", ":")) + "\n").encode()


class Records(list[Record]):
    """The records of a disk, in file order, and how many lines were skipped."""

    def __init__(self, records: Iterable[Record] = (), skipped: int = 0) -> None:
        super().__init__(records)
        self.skipped = skipped


@dataclass(frozen=True)
class Instance:
    vm: str
    host: str
    instance: str
    first: float
    last: float
    ended: str | None
    records: int

    def overlaps(self, other: Instance) -> bool:
        return self.first <= other.last and other.first <= self.last


def parse_record(line: bytes) -> Record | None:
    """A record from one line without its newline, or None if it is not exactly one."""
    try:
        fields: Any = json.loads(line)
    except ValueError:
        return None
    if not isinstance(fields, dict) or set(fields) != {"vm", "host", "instance", "seq",
                                                      "time", "event"}:
        return None
    vm, host, instance, seq, when, event = (fields[k] for k in (
        "vm", "host", "instance", "seq", "time", "event"))
    if not all(isinstance(v, str) for v in (vm, host, instance)) or event not in EVENTS:
        return None
    if type(seq) is not int or seq < 0 or type(when) not in (int, float):
        return None
    return Record(vm, host, instance, seq, float(when), event)


def _parse_lines(data: bytes) -> Records:
    """Parse every newline-terminated line; the unterminated rest is a torn record."""
    *complete, rest = data.split(b"\n")
    parsed = [parse_record(line) for line in complete if line]
    records = [r for r in parsed if r is not None]
    return Records(records, skipped=len(parsed) - len(records) + (1 if rest else 0))


def read_records(path: str | os.PathLike[str]) -> Records:
    """Every valid record of a disk, in file order (``.skipped`` counts the bad lines)."""
    return _parse_lines(Path(path).read_bytes())


def last_record(path: str | os.PathLike[str]) -> Record | None:
    """The last complete record of a disk (None if it has none or does not exist).

    Reads only the tail, going further back while the tail holds no valid record.
    """
    try:
        with open(path, "rb") as disk:
            size = disk.seek(0, os.SEEK_END)
            span = TAIL_BYTES
            while True:
                start = max(0, size - span)
                disk.seek(start)
                data = disk.read(size - start)
                if start > 0:  # the first line is probably cut: drop it
                    data = data[data.find(b"\n") + 1:] if b"\n" in data else b""
                found = _parse_lines(data)
                if found:
                    return found[-1]
                if start == 0:
                    return None
                span *= 4
    except FileNotFoundError:
        return None


def instances(records: Iterable[Record]) -> list[Instance]:
    """One entry per run of a guest, ordered by when it started."""
    runs: dict[str, list[Record]] = {}
    for record in records:
        runs.setdefault(record.instance, []).append(record)
    found = []
    for instance, own in runs.items():
        times = [r.time for r in own]
        last = max(own, key=lambda r: (r.time, r.seq))
        found.append(Instance(vm=own[0].vm, host=own[0].host, instance=instance,
                              first=min(times), last=max(times),
                              ended=last.event if last.event in ENDINGS else None,
                              records=len(own)))
    return sorted(found, key=lambda i: (i.first, i.instance))


def double_runs(runs: Iterable[Instance]) -> list[tuple[Instance, Instance]]:
    """Every pair of instances of one VM that were alive at the same time."""
    ordered = sorted(runs, key=lambda i: (i.first, i.instance))
    pairs = []
    for index, earlier in enumerate(ordered):
        for later in ordered[index + 1:]:
            if later.first > earlier.last:
                break
            if later.vm == earlier.vm:
                pairs.append((earlier, later))
    return pairs


def first_start_after(records: Iterable[Record], t: float) -> Instance | None:
    """The first instance that started at or after wall time ``t``."""
    return next((i for i in instances(records) if i.first >= t), None)
