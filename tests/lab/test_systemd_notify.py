"""systemd's notify protocol from real node daemons, read on a real AF_UNIX datagram socket.

The test plays systemd's part: it binds the socket named by ``NOTIFY_SOCKET``,
turns on ``SO_PASSCRED`` (as systemd does) so every datagram carries its
sender's pid, and sets ``WATCHDOG_USEC``. The daemons are a local lab's,
started with HA off and enabled with ``hactl`` as an operator would.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hacluster.lab.local import LocalLab
from hacluster.node.config import load

from ..conftest import lab_base_port, wait_for
from .test_mgmt_lab import ok

pytestmark = pytest.mark.slow  # real pools of node daemons
T = 3.0
WATCHDOG_USEC = 1_000_000  # shorter than T/2: the daemons must warn


@dataclass
class FakeSystemd:
    """The receiving end of ``NOTIFY_SOCKET``: every datagram with its sender's pid."""

    path: Path
    messages: list[tuple[float, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.socket.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        ucred = struct.calcsize("iII")
        while not self.stop.is_set():
            try:
                data, ancillary, _, _ = self.socket.recvmsg(4096, socket.CMSG_SPACE(ucred))
            except TimeoutError:
                continue
            pid = next(struct.unpack("iII", raw[:ucred])[0] for level, kind, raw in ancillary
                       if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
            with self.lock:
                self.messages.extend((time.monotonic(), pid, line)
                                     for line in data.decode().split("\n") if line)

    def of(self, pid: int, since: float = 0.0) -> list[str]:
        with self.lock:
            return [text for at, sender, text in self.messages if sender == pid and at >= since]

    def statuses(self, pid: int) -> list[str]:
        return [m.removeprefix("STATUS=") for m in self.of(pid) if m.startswith("STATUS=")]

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.socket.close()


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    listener = FakeSystemd(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield listener
    finally:
        listener.close()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_ready_status_pets_in_every_state_and_stopping(tmp_path: Path,
                                                       systemd: FakeSystemd) -> None:
    lab = LocalLab(tmp_path / "lab")
    # The watchdog process is planted late: a paused daemon must wake to its own stall
    # check and say STATUS=fenced, not race the watchdog that kills it while stopped
    # (whose deadline, what is left of the lease, can fall inside the pause).
    lab.up(2, T, base_port=lab_base_port(), ha_off=True,
           unsafe_watchdog_delay=3 * T)
    try:
        pids = [lab.pid(i) for i in range(2)]
        wait_for(lambda: all("READY=1" in systemd.of(p) for p in pids), 20, "READY=1")
        assert all(systemd.statuses(p) == ["HA off"] for p in pids)
        # HA off: systemd's watchdog is petted all the same, every half of WatchdogSec
        off = time.monotonic()
        time.sleep(3.2)
        for pid in pids:
            pets = systemd.of(pid, since=off).count("WATCHDOG=1")
            print(f"host pid {pid}: {pets} pets in 3.2 s with HA off (expected about 6)")
            assert pets >= 4, f"{pets} pets in 3.2 s with HA off"
        # WatchdogSec=1s is shorter than T/2: each daemon says so
        warnings = [e for e in lab.events() if e["event"] == "warning"
                    and "WatchdogSec=1s" in e.get("text", "")]
        assert sorted(e["host"] for e in warnings) == [0, 1]

        ok(lab, "pool-ha-enable", f"ha-config:timeout={T:g}")
        def armed_pool() -> bool:
            last = [(systemd.statuses(p) or [""])[-1] for p in pids]
            master = next((r["host"] for r in lab.status() if r.get("master")), None)
            return master is not None and sorted(last) == [
                "HA on: normal, master host " + f"{master}, liveset 2 of 2",
                "HA on: normal, master, liveset 2 of 2"]

        wait_for(armed_pool, 30, "STATUS= of an armed pool with one master")
        armed = time.monotonic()
        time.sleep(1.5)
        assert all(systemd.of(p, since=armed).count("WATCHDOG=1") >= 2 for p in pids)
        # the daemon's children (guests, its watchdog process) cannot speak for it
        for child in children(pids[0]) + children(pids[1]):
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            assert not any(v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_")) for v in environ)

        # a paused daemon fences on waking: STATUS=fenced, then no pet at all
        timing = load(lab.host_dir(0) / "node.toml").timing
        lab.pause(0, timing.stall_limit + 1.0)
        wait_for(lambda: not lab.running(0), 10, "the fenced daemon to exit")
        said = systemd.of(pids[0])
        assert "STATUS=fenced" in said
        assert "WATCHDOG=1" not in said[said.index("STATUS=fenced"):]
        assert "STOPPING=1" not in said

        # a clean stop (SIGTERM) says STOPPING=1
        wait_for(lambda: systemd.statuses(pids[1])[-1] == "HA on: normal, master, "
                 "liveset 1 of 2", 30, "host 1 alone")
        os.kill(pids[1], signal.SIGTERM)
        wait_for(lambda: not lab.running(1), 20, "host 1 to leave")
        assert "STOPPING=1" in systemd.of(pids[1])
        assert systemd.statuses(pids[1])[-1] == "HA off"
    finally:
        lab.down()
