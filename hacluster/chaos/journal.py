"""The chaos journal: what the runner did and when, one JSON object per line.

Rules:

* Every record has ``time`` (wall clock, the clock the guests' disks and the
  nodes' event logs use, so all three line up) and ``event``: ``begin``
  (the run's parameters), ``ready`` (the pool first settled), ``inject`` and
  ``heal`` (fault ``n``), ``restart`` (a host started again), ``settled`` or
  ``unsettled`` (fault ``n``'s recovery), ``end``.
* Each record is written and flushed at once: a run cut short still leaves a
  journal the checker can read up to the cut.
* Reading skips a torn last line; any other unreadable line is an error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

JOURNAL = "chaos.jsonl"


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"time": round(time.time(), 3), "event": event, **fields}
        with self.path.open("a") as out:
            out.write(json.dumps(record) + "\n")
        return record


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's records in order (a torn last line is skipped)."""
    text = path.read_text()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # torn: the runner was cut while writing it
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise ValueError(f"{path}:{number}: not a journal record: {line[:80]!r}") from None
    return records
