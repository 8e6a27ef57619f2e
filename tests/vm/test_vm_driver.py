"""VM drivers: real guest processes under the process driver, and the memory-only sim driver."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hacluster.vm.driver import (
    ExitKind,
    ProcessDriver,
    SimDriver,
    VMExit,
    VMNotRunning,
    VMStartError,
)
from hacluster.vm.guest import READY_ENV, crash_file, halt_file
from hacluster.vm.records import instances, read_records

from ..guests import guest, written


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by init counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


Drivers = Callable[..., ProcessDriver]


@pytest.fixture
async def drivers() -> AsyncIterator[Drivers]:
    """Make process drivers; whatever they still run is killed at the end."""
    made: list[ProcessDriver] = []

    def make(**options: Any) -> ProcessDriver:
        made.append(ProcessDriver(**options))
        return made[-1]

    yield make
    for driver in made:
        driver.kill_all()
    for driver in made:
        await until(lambda: not driver.running())  # noqa: B023 (awaited right here)


async def test_exits_are_classified_and_reported_once(tmp_path: Path, drivers: Drivers) -> None:
    reported: list[VMExit] = []
    driver = drivers(on_exit=reported.append)
    disks = {vm: tmp_path / f"{vm}.disk" for vm in ("halts", "crashes", "stopped", "killed")}
    pids = {vm: await driver.start(vm, guest(disk, vm)) for vm, disk in disks.items()}
    assert driver.running() == pids
    assert all(os.getpgid(pid) == os.getpgid(0) for pid in pids.values())
    halt_file(disks["halts"]).touch()
    crash_file(disks["crashes"]).touch()
    os.kill(pids["killed"], signal.SIGKILL)
    stopped = await driver.stop("stopped")
    assert (stopped.kind, stopped.returncode) == (ExitKind.STOPPED, 0)
    await until(lambda: not driver.running())
    kinds = {e.vm: (e.kind, e.returncode) for e in reported}
    assert kinds == {"halts": (ExitKind.INTERNAL_SHUTDOWN, 0), "crashes": (ExitKind.CRASH, 1),
                     "stopped": (ExitKind.STOPPED, 0),
                     "killed": (ExitKind.CRASH, -signal.SIGKILL)}
    assert list(driver.exits) == reported
    assert [e.seq for e in reported] == [1, 2, 3, 4] and driver.last_seq == 4
    assert driver.exits_since(2) == reported[2:]
    assert read_records(disks["stopped"])[-1].event == "stop"


async def test_start_failures(tmp_path: Path, drivers: Drivers) -> None:
    driver = drivers()
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('no disk here'); sys.exit(7)"]
    with pytest.raises(VMStartError, match=r"status 7.*no disk here"):
        await driver.start("vm-1", failing)
    with pytest.raises(VMStartError, match="cannot run"):
        await driver.start("vm-1", [str(tmp_path / "missing-program")])
    await driver.start("vm-1", guest(tmp_path / "vm.disk", "vm-1"))
    await written(tmp_path / "vm.disk")
    with pytest.raises(VMStartError, match="already running"):
        await driver.start("vm-1", guest(tmp_path / "vm.disk", "vm-1"))
    with pytest.raises(VMNotRunning):
        await driver.stop("vm-2")
    assert list(driver.running()) == ["vm-1"] and not driver.exits
    await driver.stop("vm-1")
    assert len(instances(read_records(tmp_path / "vm.disk"))) == 1


async def test_refused_guest_is_a_start_error(tmp_path: Path, drivers: Drivers) -> None:
    driver = drivers()
    disk = tmp_path / "vm.disk"
    await driver.start("vm-1", guest(disk, "vm-1"))
    await written(disk)
    other = drivers()
    with pytest.raises(VMStartError, match=r"status 3.*refusing"):
        await other.start("vm-1", guest(disk, "vm-1"))
    await driver.stop("vm-1")


async def test_stop_kills_a_guest_that_ignores_sigterm(drivers: Drivers) -> None:
    driver = drivers()
    stubborn = [sys.executable, "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "time.sleep(60)"]
    await driver.start("vm-1", stubborn)
    took = time.monotonic()
    stopped = await driver.stop("vm-1", timeout=0.3)
    assert time.monotonic() - took < 3
    assert (stopped.kind, stopped.returncode) == (ExitKind.STOPPED, -signal.SIGKILL)


async def test_kill_all_kills_every_vm_at_once(tmp_path: Path, drivers: Drivers) -> None:
    driver = drivers(keep=2)
    pids = [await driver.start(f"vm-{i}", guest(tmp_path / f"{i}.disk", f"vm-{i}"))
            for i in range(3)]
    driver.kill_all()
    await until(lambda: not driver.running())
    assert all(gone(pid) for pid in pids)
    assert [e.kind for e in driver.exits] == [ExitKind.STOPPED] * 2  # bounded: last two kept
    assert [e.seq for e in driver.exits] == [2, 3]


HOLDER = """
import asyncio, sys
from hacluster.vm.driver import ProcessDriver

async def main() -> None:
    driver = ProcessDriver()
    pid = await driver.start("vm-1", [sys.executable, "-c", "import time; time.sleep(60)"])
    print(pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_vm_dies_with_its_daemon() -> None:
    daemon = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert daemon.stdout is not None
    vm_pid = int(daemon.stdout.readline())
    try:
        assert not gone(vm_pid)
        daemon.kill()  # SIGKILL: no cleanup code runs in the daemon
        daemon.wait()
        deadline = time.monotonic() + 5
        while not gone(vm_pid):
            assert time.monotonic() < deadline, "the VM outlived its daemon"
            time.sleep(0.02)
    finally:
        daemon.kill()
        daemon.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(vm_pid, signal.SIGKILL)


def test_sim_driver_accounts_memory() -> None:
    reported: list[VMExit] = []
    sim = SimDriver(memory=4096, on_exit=reported.append)
    a = sim.start("a", 2048)
    b = sim.start("b", 1024)
    assert sim.running() == {"a": a, "b": b} and a != b and sim.free() == 1024
    with pytest.raises(VMStartError, match=r"needs 2048 MiB.*1024 of 4096"):
        sim.start("c", 2048)
    with pytest.raises(VMStartError, match="already running"):
        sim.start("a", 1)
    with pytest.raises(VMNotRunning):
        sim.stop("c")
    assert sim.guest_exit("a", 0).kind == ExitKind.INTERNAL_SHUTDOWN
    c = sim.start("c", 2048)
    assert sim.guest_exit("c", 139).kind == ExitKind.CRASH
    assert sim.stop("b").kind == ExitKind.STOPPED
    sim.start("d", 4096)
    sim.kill_all()
    assert sim.running() == {} and sim.free() == 4096
    assert [(e.seq, e.vm, e.kind) for e in reported] == [
        (1, "a", ExitKind.INTERNAL_SHUTDOWN), (2, "c", ExitKind.CRASH),
        (3, "b", ExitKind.STOPPED), (4, "d", ExitKind.STOPPED)]
    assert c not in (a, b)


# ------------------------------------------------------------ readiness
async def test_a_vm_with_a_ready_file_is_started_when_it_says_so(tmp_path: Path,
                                                                  drivers: Drivers) -> None:
    driver = drivers()
    disk, ready = tmp_path / "r.disk", tmp_path / "r.ready"
    ready.write_text("an earlier run's\n")  # stale: removed before the start
    took = time.monotonic()
    await driver.start("r", [*guest(disk, "r"), "--boot", "0.8"], {READY_ENV: str(ready)},
                       ready_file=str(ready), ready_timeout=20)
    waited = time.monotonic() - took
    print(f"ready after {waited:.2f} s (boot 0.8 s)")
    assert waited >= 0.8 and ready.exists()
    [run] = instances(read_records(disk))
    assert ready.read_text().strip() == run.instance  # this run said it, not an old one
    assert "r" in driver.running()


async def test_a_vm_with_a_readiness_command_is_started_once_it_passes(
        tmp_path: Path, drivers: Drivers) -> None:
    """The check sees the VM's environment and passes once the guest wrote its file."""
    driver = drivers()
    disk, ready = tmp_path / "c.disk", tmp_path / "c.ready"
    check = ["sh", "-c", 'test -s "$HACLUSTER_READY_FILE"']
    took = time.monotonic()
    await driver.start("c", [*guest(disk, "c"), "--boot", "0.8"], {READY_ENV: str(ready)},
                       ready_command=check, ready_timeout=20)
    waited = time.monotonic() - took
    print(f"ready after {waited:.2f} s (boot 0.8 s)")
    assert waited >= 0.8 and "c" in driver.running()


@pytest.mark.parametrize(("check", "said"), [
    (["sh", "-c", "exit 4"], "its readiness command did not pass: exit status 4"),
    (["/nonexistent/check"], "cannot run '/nonexistent/check'"),
    (["sleep", "30"], "still running after"),
])
async def test_a_readiness_command_that_never_passes_fails_the_start(
        drivers: Drivers, check: list[str], said: str) -> None:
    driver = drivers()
    with pytest.raises(VMStartError, match=rf"not ready within 0\.6 s \(.*{said}"):
        await driver.start("n", ["sleep", "30"], ready_command=check, ready_timeout=0.6)
    assert driver.running() == {}


async def test_a_vm_never_ready_or_dying_first_did_not_start(tmp_path: Path,
                                                             drivers: Drivers) -> None:
    driver = drivers()
    ready = tmp_path / "x.ready"
    ready.write_text("stale\n")
    with pytest.raises(VMStartError, match=r"not ready within 0\.5 s .*it was killed"):
        await driver.start("x", ["sleep", "30"], ready_file=str(ready), ready_timeout=0.5)
    assert driver.running() == {} and not ready.exists()
    with pytest.raises(VMStartError, match="exited with status 3 while starting"):
        await driver.start("y", ["sh", "-c", "sleep 0.3; exit 3"],
                           ready_file=str(tmp_path / "y.ready"), ready_timeout=5)
    assert driver.exits_since(0) == []  # a VM that did not start is no exit
