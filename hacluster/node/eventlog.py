"""The node's structured event log: one JSON object per line, flushed as written.

Rules: every record carries the wall-clock time, the host and the event name;
``sync`` records (a fence's reason) are also fsynced before the call returns;
without a path the log goes to standard error.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class EventLog:
    def __init__(self, path: Path | None, host: int) -> None:
        self.host = host
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else 2

    def write(self, event: str, sync: bool = False, **fields: Any) -> None:
        record = {"time": round(time.time(), 3), "host": self.host, "event": event, **fields}
        os.write(self.fd, (json.dumps(record, default=sorted) + "\n").encode())
        if sync and self.fd != 2:
            os.fsync(self.fd)
