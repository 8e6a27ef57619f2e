"""The node's structured event log: one JSON object per line, written by its own thread.

Rules:

* Every record carries the wall-clock time, the host and the event name;
  without a path the log goes to standard error.
* :meth:`EventLog.write` never waits for the disk: records are queued to one
  writer thread, in the order written, so a slow or hung log directory never
  delays the liveness loop (a pet, a heartbeat) nor the main loop.
* At most :data:`MAX_PENDING` records wait; beyond that a record is dropped
  and counted, and the count is written as a ``log-dropped`` record once the
  disk catches up.
* A ``sync`` record (a fence's reason) is also fsynced; the call waits for
  that at most :data:`SYNC_WAIT` seconds, so even a hung disk cannot hold a
  fence back.
* :meth:`EventLog.close` writes what is queued (waiting at most
  :data:`CLOSE_WAIT` seconds) and ends the thread.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from hacluster.node.osthread import name_os_thread

MAX_PENDING = 10_000
SYNC_WAIT = 1.0
CLOSE_WAIT = 2.0

_Item = tuple[bytes, threading.Event | None] | None  # None ends the writer


class EventLog:
    def __init__(self, path: Path | None, host: int) -> None:
        self.host = host
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else 2
        self.dropped = 0
        self._queue: queue.Queue[_Item] = queue.Queue(MAX_PENDING)
        self._writer = threading.Thread(target=self._write_all, name="event log",
                                        daemon=True)
        self._writer.start()

    def write(self, event: str, sync: bool = False, **fields: Any) -> None:
        line = self._line(event, **fields)
        done = threading.Event() if sync else None
        try:
            self._queue.put_nowait((line, done))
        except queue.Full:
            self.dropped += 1
            return
        if done is not None:
            done.wait(SYNC_WAIT)

    def stats(self) -> dict[str, int]:
        """Records waiting for the disk, and records lost (queue full or disk refused)."""
        return {"pending": self._queue.qsize(), "dropped": self.dropped}

    def close(self) -> None:
        """Write what is queued (within :data:`CLOSE_WAIT`) and end the writer."""
        try:
            self._queue.put(None, timeout=CLOSE_WAIT)
        except queue.Full:
            return
        self._writer.join(CLOSE_WAIT)

    def _write_all(self) -> None:
        name_os_thread("event log")
        reported = 0
        while (item := self._queue.get()) is not None:
            line, done = item
            try:
                if self.dropped > reported:
                    missed, reported = self.dropped - reported, self.dropped
                    os.write(self.fd, self._line("log-dropped", records=missed))
                os.write(self.fd, line)
                if done is not None and self.fd != 2:
                    os.fsync(self.fd)
            except OSError:
                self.dropped += 1  # the disk refused it: counted, never raised
            finally:
                if done is not None:
                    done.set()

    def _line(self, event: str, **fields: Any) -> bytes:
        # its own fields last: a record's fields never stand in for when, where or what
        record = {**fields, "time": round(time.time(), 3), "host": self.host, "event": event}
        return (json.dumps(record, default=sorted) + "\n").encode()
