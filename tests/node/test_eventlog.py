"""The node's event log: one JSON record per line, its own fields kept."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hacluster.node.eventlog import EventLog


def test_a_records_fields_never_stand_in_for_when_where_or_what(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, 2)
    before = time.time()
    log.write("evidence", host="host-0007", time=1.0, vm="vm-a")
    log.close()
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert (record["host"], record["event"], record["vm"]) == (2, "evidence", "vm-a")
    assert record["time"] >= round(before, 3) - 0.001
