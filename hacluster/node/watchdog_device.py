"""A Linux watchdog device (``/dev/watchdog``: softdog or hardware) as a fence.

Rules:

* The device is opened when HA starts on this host (armed or joining: the
  core pets from its first step) and its timer runs from that moment. Its
  timeout is set with ``WDIOC_SETTIMEOUT`` to :func:`device_timeout`: whole
  seconds, the lease less three beats, so the device never fires later than
  the lease the core counts on (a pet is allowed only while the lease has at
  least the device's timeout left). The driver's answer is the
  timeout it took: one it rounded up, or a refusal, is an error that names
  the device and what to do.
* A pet writes one byte other than ``'V'``. The caller allows a pet only up
  to a moment (``latest``, the monotonic clock): the device's thread drops a
  pet it could not start by then, so a late pet never extends the device's
  deadline past the core's.
* A clean stop of HA (shutdown, HA disabled, the daemon leaving) is the magic
  close: ``'V'`` then close, which stops the timer (unless the driver was
  loaded with ``nowayout``). A fence or a crash never does it: the file is
  closed by the exit and the timer runs on, so the host is reset unless a
  restarted daemon opens the device and pets it within the timeout.
* Every call on the device runs on a thread of its own, in order: a driver
  whose write blocks (an IPMI controller answering slowly) never blocks the
  liveness loop. A pet asked for while the previous one is still pending
  adds nothing. An exiting daemon waits a little (:meth:`WatchdogDevice.settle`)
  for the calls already asked, so that its magic close is done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import math
import os
import struct
import time
from pathlib import Path
from typing import Any

from hacluster.core.timing import Timing


def _ioc(direction: int, number: int) -> int:
    """``_IOC(direction, 'W', number, sizeof(int))`` from <linux/watchdog.h>."""
    return direction << 30 | struct.calcsize("i") << 16 | ord("W") << 8 | number


_READ, _READ_WRITE = 2, 3
WDIOC_KEEPALIVE = _ioc(_READ, 5)
WDIOC_SETTIMEOUT = _ioc(_READ_WRITE, 6)
WDIOC_GETTIMEOUT = _ioc(_READ, 7)
PET = b"\0"
MAGIC = b"V"


class WatchdogDeviceError(RuntimeError):
    """The watchdog device cannot fence this host as configured."""


def device_timeout(timing: Timing, delay: float = 0.0) -> int:
    """The device's timeout: the whole seconds of the lease less three beats (the
    age the evidence behind a healthy host's lease reaches), so that a healthy
    host's pets fit in its lease (the client drops a pet that would outlast it);
    ``delay`` added (tests only). :class:`WatchdogDeviceError` when no whole
    second fits."""
    seconds = math.floor(timing.lease - 3 * max(timing.t1, timing.t2) + delay)
    if seconds < 1:
        raise WatchdogDeviceError(
            f"a watchdog device counts whole seconds: the lease of T={timing.T:g} s is "
            "too short for one (use T >= 1.5 s, or the watchdog process alone)")
    return seconds


class WatchdogDevice:
    """One watchdog device, driven from a thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.timeout = 0  # seconds, as the driver took them
        self.pets = 0
        self.late = 0  # pets dropped: they could not start in time
        self.error = ""  # the last failed pet
        self._wanted = False  # opened and not closed, as the caller sees it
        self._fd: int | None = None  # the device's thread's own
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wd-device")
        self._pending: concurrent.futures.Future[None] | None = None

    @property
    def is_open(self) -> bool:
        return self._wanted

    async def open(self, timeout: int) -> int:
        """Open the device (its timer starts) with ``timeout`` seconds; the timeout
        the driver took, or :class:`WatchdogDeviceError`."""
        if self._wanted:
            raise WatchdogDeviceError(f"the watchdog device {self.path} is already open")
        self._wanted = True
        try:
            return await asyncio.wrap_future(self._pool.submit(self._open, timeout))
        except BaseException:
            self._wanted = False
            raise

    def pet(self, latest: float) -> None:
        """Pet soon, if that can start by ``latest`` (``time.monotonic()``); never waits."""
        if not self._wanted or (self._pending is not None and not self._pending.done()):
            return
        self._pending = self._pool.submit(self._pet, latest)

    def close(self) -> None:
        """The magic close (a clean stop of HA): the timer stops. Never waits."""
        if self._wanted:
            self._wanted = False
            self._pool.submit(self._close)

    async def settle(self, limit: float) -> None:
        """Wait, at most ``limit`` seconds, for the calls already asked of the device
        (the daemon is exiting: a magic close must be done before it does)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(self._pool.submit(lambda: None)), limit)

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "open": self.is_open, "timeout": self.timeout,
                "pets": self.pets, "late": self.late, "error": self.error}

    # ------------------------------------------------------------ on the device's thread
    def _open(self, timeout: int) -> int:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as error:
            hint = " (another program holds it: stop any other watchdog daemon)" \
                if error.errno == errno.EBUSY else ""
            raise WatchdogDeviceError(f"cannot open the watchdog device {self.path}: "
                                      f"{error.strerror}{hint}") from None
        try:
            answer = fcntl.ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", timeout))
            took: int = struct.unpack("i", answer)[0]
        except OSError as error:
            self._magic_close(fd)
            raise WatchdogDeviceError(
                f"the watchdog device {self.path} refuses a {timeout} s timeout "
                f"(WDIOC_SETTIMEOUT: {error.strerror}): not a watchdog, or its driver's "
                "largest timeout is shorter: lower the pool's HA timeout") from None
        if not 1 <= took <= timeout:
            self._magic_close(fd)
            raise WatchdogDeviceError(
                f"the watchdog device {self.path} took a {took} s timeout for the {timeout} s "
                "asked: it would fire after the fence window assumes")
        os.write(fd, PET)
        self._fd, self.timeout, self.error = fd, took, ""
        return took

    def _pet(self, latest: float) -> None:
        if self._fd is None:
            return
        if time.monotonic() > latest:
            self.late += 1
            return
        try:
            os.write(self._fd, PET)
            self.pets += 1
        except OSError as error:
            self.error = f"pet failed: {error.strerror}"

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._magic_close(fd)

    @staticmethod
    def _magic_close(fd: int) -> None:
        with contextlib.suppress(OSError):  # closing still ends our use; the timer may run on
            os.write(fd, MAGIC)
        os.close(fd)
