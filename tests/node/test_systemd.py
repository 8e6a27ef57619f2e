"""sd_notify's pieces: systemd's variables, real datagrams, the pet's gating, the words.

The daemons' side of the protocol, end to end, is tests/lab/test_systemd_notify.py;
under a real systemd, tests/lab/test_systemd_unit.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.core.events import Watchdog
from hacluster.core.timing import Timing
from hacluster.node.systemd import Notifier, status_text, watchdog_sec_problem
from hacluster.node.watchdog_client import WatchdogClient


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    found = []
    try:
        while True:
            found.append(sock.recv(4096).decode())
    except BlockingIOError:
        return found


def test_the_variables_are_read_once_and_removed_from_the_environment(
        listener: socket.socket) -> None:
    env = {"NOTIFY_SOCKET": listener.getsockname(), "WATCHDOG_USEC": "3000000",
           "WATCHDOG_PID": "42", "PATH": "/bin"}
    notifier = Notifier.from_environment(env, pid=42)
    assert env == {"PATH": "/bin"}  # the workloads it starts cannot speak for it
    assert notifier.enabled and notifier.watchdog_sec == 3.0 and notifier.pet_interval == 1.0
    notifier.ready()
    notifier.pet()
    notifier.set_status("HA off")
    notifier.set_status("HA off")  # unchanged: not sent again
    notifier.stopping()
    assert received(listener) == ["READY=1", "WATCHDOG=1", "STATUS=HA off", "STOPPING=1"]


@pytest.mark.parametrize(("env", "watchdog_sec", "problem"), [
    ({"WATCHDOG_USEC": "3000000"}, 3.0, ""),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "7"}, None, ""),  # another process's
    ({"WATCHDOG_USEC": "soon"}, None, "not a positive whole number"),
    ({"WATCHDOG_USEC": "-5"}, None, "not a positive whole number"),
    ({"WATCHDOG_USEC": "0"}, None, "not a positive whole number"),
    ({}, None, ""),
])
def test_watchdog_usec(listener: socket.socket, env: dict[str, str],
                       watchdog_sec: float | None, problem: str) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.getsockname(), **env},
                                         pid=42)
    assert notifier.watchdog_sec == watchdog_sec
    assert problem in notifier.problem and bool(problem) == bool(notifier.problem)


def test_without_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "3000000"})
    assert not notifier.enabled and notifier.pet_interval is None
    notifier.ready()
    notifier.pet()


def test_an_abstract_socket_and_a_vanished_one() -> None:
    name = f"hacluster-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        notifier.ready()
        assert sock.recv(64) == b"READY=1"
    notifier.pet()  # nobody listens any more: dropped, never raised


def test_the_systemd_pet_follows_the_cores_watchdogs(listener: socket.socket) -> None:
    client = WatchdogClient(Notifier.from_environment(
        {"NOTIFY_SOCKET": listener.getsockname(), "WATCHDOG_USEC": "2000000"}))
    client.pet_systemd(now=100.0)  # HA off: no watchdog of the core, petted all the same
    client.pet(Watchdog.LEASE, 5.0, now=100.0)
    client.pet_systemd(now=104.0)
    client.pet_systemd(now=105.5)  # the lease is overdue: systemd must not be petted
    assert received(listener) == ["WATCHDOG=1", "WATCHDOG=1"]
    client.disarm()  # HA stopped cleanly: petted again
    client.pet_systemd(now=106.0)
    client.fence()
    client.pet_systemd(now=107.0)
    assert received(listener) == ["WATCHDOG=1"]


def test_status_text() -> None:
    assert status_text(None, False, None, 0, 3) == "HA off"
    assert status_text("FENCED", False, None, 0, 3) == "fenced"
    assert status_text("NORMAL", True, 0, 3, 3) == "HA on: normal, master, liveset 3 of 3"
    assert status_text("JOINING", False, None, 0, 3) == \
        "HA on: joining, no master, liveset 0 of 3"
    assert status_text("AGREEING", False, 2, 2, 3) == \
        "HA on: agreeing, master host 2, liveset 2 of 3"


def test_watchdog_sec_shorter_than_the_stall_limit_is_named() -> None:
    timing = Timing.derive(60.0)
    assert watchdog_sec_problem(None, timing) is None
    assert watchdog_sec_problem(31.0, timing) is None
    assert watchdog_sec_problem(30.0, timing) is not None  # a pet may be a second old
    problem = watchdog_sec_problem(20.0, timing)
    assert problem is not None and "WatchdogSec=20s" in problem and "at least 31s" in problem
