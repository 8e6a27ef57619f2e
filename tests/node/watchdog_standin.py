"""A stand-in for a Linux watchdog device, served by FUSE, for machines without one.

Run as its own process: ``python watchdog_standin.py MOUNTPOINT LOG``. It
serves ``MOUNTPOINT/watchdog``, a file that keeps the device protocol of
<linux/watchdog.h> as drivers do (watchdog_dev.c):

* one opener at a time (a second open fails with EBUSY); the open starts the
  timer, with the default timeout of softdog (60 s);
* a write pets; a ``'V'`` in the last write arms the magic close;
* ``WDIOC_SETTIMEOUT`` (1..65535 s, else EINVAL) sets the timeout, pets and
  answers the timeout taken; ``WDIOC_GETTIMEOUT`` answers it;
  ``WDIOC_KEEPALIVE`` pets; any other ioctl fails with ENOTTY;
* the release after a magic close stops the timer; any other release leaves
  it running ("watchdog did not stop!");
* when the timer runs out it fires: a real device resets the host, this one
  writes ``fire`` to the log and stops.

Every event goes to LOG as a JSON line stamped with ``time.monotonic()``
(the same clock in every process), flushed at once: ``open``, ``pet``,
``timeout`` (with ``seconds``), ``close`` (with ``magic``), ``fire``. The
file is not a character device (this kernel has no CUSE), which the driver
does not ask for; the ioctls reach this process as FUSE's restricted ioctls.
"""

from __future__ import annotations

import ctypes
import errno
import json
import stat
import sys
import threading
import time
from typing import Any

import mfusepy as fuse

WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 65535


class WatchdogStandIn(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, log: str) -> None:
        self.log = open(log, "a", buffering=1)  # noqa: SIM115 - open for the process's life
        self.lock = threading.Lock()
        self.opened = False
        self.running = False  # the timer
        self.timeout = DEFAULT_TIMEOUT
        self.last_pet = 0.0
        self.expect_close = False
        threading.Thread(target=self._timer, daemon=True).start()

    def _record(self, event: str, **fields: Any) -> None:
        self.log.write(json.dumps({"time": time.monotonic(), "event": event, **fields}) + "\n")

    def _pet(self) -> None:
        self.last_pet = time.monotonic()

    def _timer(self) -> None:
        while True:
            time.sleep(0.02)
            with self.lock:
                if self.running and time.monotonic() > self.last_pet + self.timeout:
                    self.running = False
                    self._record("fire", timeout=self.timeout)

    # ------------------------------------------------------------ FUSE
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        now = time.time_ns()
        times = {"st_atime": now, "st_mtime": now, "st_ctime": now}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times}
        if path == "/watchdog":
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 0, **times}
        raise fuse.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: Any) -> list[str]:
        return [".", "..", "watchdog"]

    def open(self, path: str, flags: int) -> int:
        if path != "/watchdog":
            raise fuse.FuseOSError(errno.ENOENT)
        with self.lock:
            if self.opened:
                raise fuse.FuseOSError(errno.EBUSY)
            self.opened, self.running, self.expect_close = True, True, False
            self.timeout = self.timeout if self.timeout else DEFAULT_TIMEOUT
            self._pet()
            self._record("open")
        return 0

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        return 0

    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        with self.lock:
            self.expect_close = b"V" in data
            self._pet()
            self._record("pet", magic=self.expect_close)
        return len(data)

    def ioctl(self, path: str, cmd: int, arg: Any, fh: Any, flags: int, data: Any) -> int:
        value = ctypes.cast(data, ctypes.POINTER(ctypes.c_int))
        with self.lock:
            if cmd & 0xFFFFFFFF == WDIOC_SETTIMEOUT:
                seconds = value.contents.value
                if not 1 <= seconds <= MAX_TIMEOUT:
                    raise fuse.FuseOSError(errno.EINVAL)
                self.timeout = seconds
                self._pet()
                self._record("timeout", seconds=seconds)
                value.contents.value = self.timeout
            elif cmd & 0xFFFFFFFF == WDIOC_GETTIMEOUT:
                value.contents.value = self.timeout
            elif cmd & 0xFFFFFFFF == WDIOC_KEEPALIVE:
                self._pet()
                self._record("pet", magic=False)
            else:
                raise fuse.FuseOSError(errno.ENOTTY)
        return 0

    def release(self, path: str, fh: Any) -> int:
        with self.lock:
            magic = self.expect_close
            self.opened = False
            if magic:
                self.running = False
            self._record("close", magic=magic, timer_running=self.running)
        return 0


def main() -> int:
    mountpoint, log = sys.argv[1:3]
    fuse.FUSE(WatchdogStandIn(log), mountpoint, foreground=True, direct_io=True,
              nothreads=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
