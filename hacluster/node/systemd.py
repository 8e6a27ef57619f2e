"""systemd's service protocol (``sd_notify``) for the node daemon.

Rules:

* It speaks only when systemd started the daemon: ``NOTIFY_SOCKET`` names a
  Unix datagram socket (a path, or ``@name`` in the abstract namespace).
  :meth:`Notifier.from_environment` reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``
  and ``WATCHDOG_PID`` once and removes them from the environment, so the
  workloads the daemon starts can never speak for it.
* ``WATCHDOG_USEC`` (``WatchdogSec=``) applies when ``WATCHDOG_PID`` is unset
  or names this process; the daemon then pets every half of it, or every
  second if that is sooner (:attr:`Notifier.pet_interval`), so that systemd
  kills it only for a pause of ``WatchdogSec=`` less a second at most. A
  malformed value is kept as a :attr:`Notifier.problem` for the daemon to
  report, and ignored.
* A message never blocks and never fails its caller: the socket is
  non-blocking and a send that fails (systemd gone, its queue full) is
  dropped. A dropped pet only brings systemd's watchdog closer, as a missed
  pet should.
* ``STATUS=`` is sent only when its text changes; :func:`status_text` is the
  one place that words the node's state for ``systemctl status``.
* :func:`watchdog_sec_problem` says when ``WatchdogSec=`` is shorter than the
  liveness path honours: a pause shorter than the stall limit is one the
  protocol rides out, so systemd must not kill the daemon for it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import MutableMapping

from hacluster.core.timing import Timing

VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
PET_AT_LEAST = 1.0  # seconds between systemd pets, at most


class Notifier:
    """``sd_notify`` to the socket systemd gave this process, if any."""

    def __init__(self, address: str = "", watchdog_usec: int = 0, problem: str = "") -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_usec = watchdog_usec if self.address else 0
        self.problem = problem
        self.status = ""
        self.socket: socket.socket | None = None
        if self.address:
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.socket.setblocking(False)

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None,
                         pid: int | None = None) -> Notifier:
        """The notifier systemd's variables describe (removed from ``environ``)."""
        env = os.environ if environ is None else environ
        address, usec_text, pid_text = (env.pop(name, "") for name in VARIABLES)
        pid = os.getpid() if pid is None else pid
        usec, problem = 0, ""
        if usec_text and pid_text in ("", str(pid)):  # else it watches another process
            try:
                usec = int(usec_text)
            except ValueError:
                usec = 0
            if usec <= 0:
                usec, problem = 0, (f"WATCHDOG_USEC={usec_text!r} is not a positive whole "
                                    "number of microseconds: systemd's watchdog is not petted")
        return cls(address, usec, problem)

    @property
    def enabled(self) -> bool:
        return self.socket is not None

    @property
    def watchdog_sec(self) -> float | None:
        """systemd's watchdog timeout (``WatchdogSec=``), if it watches this process."""
        return self.watchdog_usec / 1e6 if self.watchdog_usec else None

    @property
    def pet_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half the timeout, as systemd advises,
        or every second if that is sooner."""
        return min(self.watchdog_usec / 2e6, PET_AT_LEAST) if self.watchdog_usec else None

    def notify(self, message: str) -> None:
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.sendto(message.encode(), self.address)

    def ready(self) -> None:
        self.notify("READY=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def pet(self) -> None:
        self.notify("WATCHDOG=1")

    def set_status(self, text: str) -> None:
        """``STATUS=text``, sent only if it differs from the last one."""
        if text != self.status:
            self.status = text
            self.notify(f"STATUS={text}")


def status_text(phase: str | None, master: bool, master_host: int | None, liveset: int,
                hosts: int) -> str:
    """The node's state in one short line; ``phase`` None is HA off."""
    if phase is None:
        return "HA off"
    if phase == "FENCED":
        return "fenced"
    who = "master" if master else \
        f"master host {master_host}" if master_host is not None else "no master"
    return f"HA on: {phase.lower()}, {who}, liveset {liveset} of {hosts}"


def watchdog_sec_problem(watchdog_sec: float | None, timing: Timing) -> str | None:
    """Why ``WatchdogSec=`` is too short for ``timing``, or None: systemd must
    not kill the daemon for a pause shorter than the stall limit, which the HA
    protocol rides out (pets come every second at most)."""
    needed = timing.stall_limit + PET_AT_LEAST
    if watchdog_sec is None or watchdog_sec >= needed:
        return None
    return (f"WatchdogSec={watchdog_sec:g}s is shorter than the liveness path's stall limit "
            f"({timing.stall_limit:g} s, T/2 with T={timing.T:g} s) plus a second: systemd "
            "would kill the daemon for a pause the HA protocol rides out; set WatchdogSec "
            f"to at least {needed:g}s")
