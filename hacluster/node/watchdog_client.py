"""The daemon's side of fencing: its watchdog process and systemd's watchdog.

Rules:

* The watchdog process (:mod:`hacluster.node.watchdog`) is started in its own
  session with the daemon's process group to kill; the daemon leads that
  group, so the watchdog kills it and every workload it started.
* Every pet goes to the watchdog process and, under systemd
  (``NOTIFY_SOCKET``), as ``WATCHDOG=1``: ``WatchdogSec=`` restarts a daemon
  that stops petting even if its watchdog process were gone.
* A watchdog process that is gone makes a pet a no-op here: systemd's and the
  peers' timeouts still hold.
* A pet never blocks the liveness loop: the pipe to the watchdog process and
  the systemd socket are non-blocking; a pet that does not fit (the watchdog
  process is stopped and its pipe full) is dropped, which only brings its
  firing closer, as a missed pet should.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

from hacluster.core.events import Watchdog


class SystemdNotifier:
    """``sd_notify`` when run by systemd (``NOTIFY_SOCKET`` set)."""

    def __init__(self) -> None:
        path = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.socket: socket.socket | None = None
        if self.address:
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.socket.setblocking(False)

    def notify(self, message: bytes) -> None:
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.sendto(message, self.address)


class WatchdogClient:
    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.systemd = SystemdNotifier()

    def start(self, log: Path | None) -> None:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)  # lead a process group: the watchdog kills it whole
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hacluster.node.watchdog", "--group", str(os.getpgrp()),
             *(["--log", str(log)] if log else [])],
            stdin=subprocess.PIPE, start_new_session=True)
        assert self.process.stdin is not None
        os.set_blocking(self.process.stdin.fileno(), False)

    def pet(self, which: Watchdog, timeout: float) -> None:
        self._send(f"pet {which.value} {timeout}")
        self.systemd.notify(b"WATCHDOG=1")

    def disarm(self) -> None:
        self._send("disarm")

    def ready(self) -> None:
        self.systemd.notify(b"READY=1")

    def _send(self, command: str) -> None:
        if self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError, BlockingIOError):
                os.write(self.process.stdin.fileno(), command.encode() + b"\n")
