"""The daemon's side of fencing: its watchdog process, a watchdog device, systemd's watchdog.

Rules:

* The watchdog process (:mod:`hacluster.node.watchdog`) is started in its own
  session with the daemon's process group to kill; the daemon leads that
  group, so the watchdog kills it and every workload it started. It is always
  there; a watchdog device (``watchdog_device`` in node.toml,
  :mod:`hacluster.node.watchdog_device`) fences on top of it.
* Every pet of the core goes to the watchdog process and is recorded in
  :class:`Deadlines`: when each watchdog the core pets would fire. The device
  is petted only while it would still fire no later than every one of them,
  so one watchdog the core stopped petting (the statefile one, say) stops the
  device too.
* systemd's watchdog (``WatchdogSec=``) is petted from the liveness loop on a
  timer of its own, in every state: HA off, joining, armed. It stops when the
  liveness loop stops, when a watchdog the core pets is overdue (it backs up
  the watchdog process), and after a fence.
* A clean stop of HA disarms the process and does the device's magic close;
  a fence disarms the process (the daemon carries the fence out itself) and
  leaves the device's timer running: it resets the host unless the daemon is
  back in time.
* A watchdog process that is gone makes a pet a no-op here: systemd's, the
  device's and the peers' timeouts still hold.
* A pet never blocks the liveness loop: the pipe to the watchdog process and
  the systemd socket are non-blocking, the device has a thread of its own; a
  pet that does not fit (the watchdog process is stopped and its pipe full)
  is dropped, which only brings its firing closer, as a missed pet should.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from hacluster.core.events import Watchdog
from hacluster.node.systemd import Notifier
from hacluster.node.watchdog_device import WatchdogDevice


class Deadlines:
    """When each watchdog the core pets would fire, on the liveness loop's clock."""

    def __init__(self) -> None:
        self.due: dict[Watchdog, float] = {}

    def pet(self, which: Watchdog, timeout: float, now: float) -> None:
        self.due[which] = now + timeout

    def clear(self) -> None:
        self.due.clear()

    def earliest(self) -> float:
        """The first of them (infinity when none is armed)."""
        return min(self.due.values(), default=float("inf"))

    def overdue(self, now: float) -> bool:
        return self.earliest() <= now


class WatchdogClient:
    def __init__(self, systemd: Notifier, device: Path | None = None) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.systemd = systemd
        self.device = WatchdogDevice(device) if device is not None else None
        self.deadlines = Deadlines()
        self.fenced = False

    def start(self, log: Path | None) -> None:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)  # lead a process group: the watchdog kills it whole
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hacluster.node.watchdog", "--group", str(os.getpgrp()),
             *(["--log", str(log)] if log else [])],
            stdin=subprocess.PIPE, start_new_session=True)
        assert self.process.stdin is not None
        os.set_blocking(self.process.stdin.fileno(), False)

    async def open_device(self, timeout: int) -> int | None:
        """HA starts here: open the device (if any) with ``timeout`` seconds; the
        timeout its driver took (a WatchdogDeviceError if it cannot fence)."""
        self.fenced = False
        if self.device is None or self.device.is_open:
            return None if self.device is None else self.device.timeout
        return await self.device.open(timeout)

    def pet(self, which: Watchdog, timeout: float, now: float) -> None:
        """The core pets ``which`` for ``timeout`` seconds at ``now`` (the loop's clock,
        which is ``time.monotonic``)."""
        self._send(f"pet {which.value} {timeout}")
        self.deadlines.pet(which, timeout, now)
        if self.device is not None:
            self.device.pet(self.deadlines.earliest() - self.device.timeout)

    def pet_systemd(self, now: float) -> None:
        """systemd's pet, unless fenced or a watchdog the core pets is overdue."""
        if not self.fenced and not self.deadlines.overdue(now):
            self.systemd.pet()

    def disarm(self) -> None:
        """A clean stop of HA: the process disarmed, the device's magic close."""
        self._send("disarm")
        self.deadlines.clear()
        if self.device is not None:
            self.device.close()

    def fence(self) -> None:
        """The daemon fenced: the process disarmed (the daemon ends itself), the
        device left running, systemd no longer petted."""
        self.fenced = True
        self._send("disarm")

    async def settle(self, limit: float) -> None:
        """The daemon exits: let the device finish what it was asked (a magic close)."""
        if self.device is not None:
            await self.device.settle(limit)

    def _send(self, command: str) -> None:
        if self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError, BlockingIOError):
                os.write(self.process.stdin.fileno(), command.encode() + b"\n")
