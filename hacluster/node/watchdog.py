"""The fencing watchdog: a separate process that kills the node if not petted.

Rules:

* It runs in its own session, so it survives anything the node's process
  group suffers, and reads commands from a pipe: ``pet NAME SECONDS`` arms
  or refreshes the named timer, ``disarm`` stops them all.
* When any armed timer expires it first writes the reason to its log
  (flushed and synced), as a JSON record like the node's own (``"event":
  "watchdog"``), and to stderr (priority crit), then sends SIGKILL to the node's process group: the
  daemon and every workload it started die together, paused or not.
* End of input (the node exited) makes it exit quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import time

from hacluster.node.journal import Level, say


def fire(group: int, reason: str, log: str | None) -> None:
    text = f"watchdog fired: {reason}; killing process group {group}"
    if log:  # a record of the node's event log, as every other one
        record = {"time": round(time.time(), 3), "event": "watchdog", "text": text,
                  "group": group}
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        os.close(fd)
    say(Level.CRIT, text, who="hacluster watchdog")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def run(group: int, log: str | None) -> int:
    deadlines: dict[str, float] = {}
    pending = b""
    stdin = sys.stdin.fileno()
    while True:
        now = time.monotonic()
        if deadlines:
            name, due = min(deadlines.items(), key=lambda item: item[1])
            if now >= due:
                fire(group, f"{name} watchdog not petted in time", log)
                return 1
            wait: float | None = due - now
        else:
            wait = None
        ready, _, _ = select.select([stdin], [], [], wait)
        if not ready:
            continue
        chunk = os.read(stdin, 4096)
        if not chunk:
            return 0
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            words = raw.decode().split()
            if words[:1] == ["pet"] and len(words) == 3:
                deadlines[words[1]] = time.monotonic() + float(words[2])
            elif words == ["disarm"]:
                deadlines.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description="hacluster fencing watchdog")
    parser.add_argument("--group", type=int, required=True, help="process group to kill")
    parser.add_argument("--log", help="file to record a firing in, synchronously")
    args = parser.parse_args()
    return run(args.group, args.log)


if __name__ == "__main__":
    sys.exit(main())
