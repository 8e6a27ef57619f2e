"""The guest program: the "VM" that tests and demos run, logging its life to its disk.

Rules:

* ``python -m hacluster.vm.guest --disk PATH --vm UUID --host NAME`` appends
  records (see :mod:`hacluster.vm.records`) to its disk on shared storage:
  ``start`` first, then a ``beat`` every ``--interval`` seconds. Each record
  is one ``os.write`` on an ``O_APPEND`` descriptor followed by ``os.fsync``.
* Before writing anything it reads the disk's last complete record. If it
  belongs to another instance that has not ended (no ``halt`` or ``stop``)
  and is younger than ``--live-window`` seconds, another live instance is
  writing: it says so on stderr and exits with :data:`REFUSED_EXIT`, having
  written nothing. ``--no-refuse`` skips the check (tests plant double runs).
* Shutdown from inside: the file ``PATH.halt`` appearing makes it write
  ``halt``, remove the file and exit 0. ``PATH.crash`` makes it remove the
  file and exit 1 without a record, as a crash would. SIGTERM makes it write
  ``stop`` and exit 0.
* Readiness: with ``HACLUSTER_READY_FILE`` in its environment (the master
  sets it for a VM whose readiness is ``file``), it creates that file once it
  has booted: ``--boot`` seconds after its ``start`` record (a slow service's
  start-up), before its first ``beat``.
* Exit status: 0 means the guest shut down from inside (or was asked to),
  anything else is a crash.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from hacluster.vm.records import ENDINGS, Record, last_record

REFUSED_EXIT = 3
CRASH_EXIT = 1
HALT_SUFFIX = ".halt"
CRASH_SUFFIX = ".crash"


def halt_file(disk: str | os.PathLike[str]) -> Path:
    """Creating this file makes the guest on ``disk`` shut down from inside."""
    return Path(os.fspath(disk) + HALT_SUFFIX)


def crash_file(disk: str | os.PathLike[str]) -> Path:
    """Creating this file makes the guest on ``disk`` crash."""
    return Path(os.fspath(disk) + CRASH_SUFFIX)


def live_writer(disk: Path, live_window: float) -> Record | None:
    """The last record of another instance still writing to ``disk``, if there is one."""
    last = last_record(disk)
    if last is None or last.event in ENDINGS or time.time() - last.time > live_window:
        return None
    return last


class DiskWriter:
    """Appends this instance's records to its disk, one synced write each."""

    def __init__(self, disk: Path, vm: str, host: str) -> None:
        self.fd = os.open(disk, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.vm = vm
        self.host = host
        self.instance = secrets.token_hex(8)
        self.seq = 0

    def write(self, event: str) -> None:
        record = Record(self.vm, self.host, self.instance, self.seq, time.time(), event)
        os.write(self.fd, record.to_line())
        os.fsync(self.fd)
        self.seq += 1


READY_ENV = "HACLUSTER_READY_FILE"


def run(disk: Path, vm: str, host: str, interval: float, live_window: float,
        refuse: bool, boot: float = 0.0) -> int:
    if refuse and (other := live_writer(disk, live_window)) is not None:
        age = time.time() - other.time
        print(f"guest: refusing to start VM {vm} on {host}: instance {other.instance} of "
              f"host {other.host} wrote to {disk} {age:.2f} s ago and has not ended",
              file=sys.stderr)
        return REFUSED_EXIT
    writer = DiskWriter(disk, vm, host)
    writer.write("start")
    if ready := os.environ.get(READY_ENV):
        if boot > 0 and signal.sigtimedwait({signal.SIGTERM}, boot) is not None:
            writer.write("stop")
            return 0
        Path(ready).write_text(writer.instance + "\n")
    while True:
        if signal.sigtimedwait({signal.SIGTERM}, interval) is not None:
            writer.write("stop")
            return 0
        if halt_file(disk).exists():
            writer.write("halt")
            halt_file(disk).unlink(missing_ok=True)
            return 0
        if crash_file(disk).exists():
            crash_file(disk).unlink(missing_ok=True)
            return CRASH_EXIT
        writer.write("beat")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM stays pending until the loop takes it, so a record is never cut short.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    parser = argparse.ArgumentParser(prog="python -m hacluster.vm.guest",
                                     description="a guest that logs its life to its disk")
    parser.add_argument("--disk", required=True, type=Path)
    parser.add_argument("--vm", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--live-window", type=float, default=1.0)
    parser.add_argument("--boot", type=float, default=0.0,
                        help="seconds from start to ready (with HACLUSTER_READY_FILE)")
    parser.add_argument("--no-refuse", action="store_true",
                        help="start even if another live instance writes the disk (tests only)")
    args = parser.parse_args(argv)
    if args.interval <= 0 or args.live_window < 0 or args.boot < 0:
        parser.error("--interval must be positive, --live-window and --boot not negative")
    return run(args.disk, args.vm, args.host, args.interval, args.live_window,
               refuse=not args.no_refuse, boot=args.boot)


if __name__ == "__main__":
    sys.exit(main())
