"""The watchdog device driver against a stand-in that keeps the device protocol.

No watchdog device exists on this machine (and its kernel has no CUSE), so
the device is :mod:`tests.node.watchdog_standin`: a FUSE file, served by a
process of its own, that takes the writes and ioctls a driver takes, runs the
timer and records every pet, timeout, close and firing with the time. The
driver is tried alone, then inside real node daemons: a stopped daemon stops
petting and the device fires; a clean exit does the magic close; a fence does
not, and the device fires.

Mounting FUSE needs root and /dev/fuse: without them the tests skip, saying
why, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hacluster.core.events import Watchdog
from hacluster.core.timing import Timing
from hacluster.lab.local import LocalLab
from hacluster.node.config import load
from hacluster.node.systemd import Notifier
from hacluster.node.watchdog_client import WatchdogClient
from hacluster.node.watchdog_device import (
    WDIOC_GETTIMEOUT,
    WDIOC_KEEPALIVE,
    WDIOC_SETTIMEOUT,
    WatchdogDevice,
    WatchdogDeviceError,
    device_timeout,
)

from ..conftest import lab_base_port, wait_for

STANDIN = Path(__file__).with_name("watchdog_standin.py")
T = 3.0


@dataclass
class StandIn:
    device: Path
    log: Path

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [e for e in map(json.loads, lines) if kind is None or e["event"] == kind]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "mounting the FUSE stand-in needs root"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    return None


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    reason = _why_not()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the watchdog device tests cannot run in CI: {reason}")
        pytest.skip(reason)
    mount = tmp_path / "dev"
    mount.mkdir()
    log = tmp_path / "watchdog.jsonl"
    with (tmp_path / "standin.out").open("ab") as out:
        server = subprocess.Popen([sys.executable, str(STANDIN), str(mount), str(log)],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (mount / "watchdog").exists() or server.poll() is not None, 10,
                 "the stand-in to mount")
        assert server.poll() is None, (tmp_path / "standin.out").read_text()
        yield StandIn(mount / "watchdog", log)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        server.terminate()
        server.wait(10)


# ---------------------------------------------------------------- the driver alone


def test_ioctl_numbers_are_linux_watchdog_h() -> None:
    assert (WDIOC_KEEPALIVE, WDIOC_SETTIMEOUT, WDIOC_GETTIMEOUT) == \
        (0x80045705, 0xC0045706, 0x80045707)


def test_device_timeout_is_the_lease_less_three_beats_rounded_down() -> None:
    timing = Timing.derive(3.0)  # lease 3, beats 0.3
    assert device_timeout(timing) == 2
    assert device_timeout(Timing.derive(60.0)) == 51
    assert device_timeout(timing, delay=30) == 32
    assert device_timeout(Timing.derive(1.5)) == 1
    with pytest.raises(WatchdogDeviceError, match="too short"):
        device_timeout(Timing.derive(1.0))


def test_open_pet_and_magic_close(standin: StandIn) -> None:
    async def run() -> WatchdogDevice:
        device = WatchdogDevice(standin.device)
        assert await device.open(7) == 7
        device.pet(latest=time.monotonic() + 60)
        await asyncio.sleep(0.2)
        device.pet(latest=time.monotonic() - 1)  # too late to start: dropped
        await asyncio.sleep(0.2)
        device.close()
        return device

    device = asyncio.run(run())
    wait_for(lambda: bool(standin.events("close")), 5, "the close")
    assert [e["event"] for e in standin.events()] == ["open", "timeout", "pet", "pet", "pet",
                                                      "close"]
    assert standin.events("timeout")[0]["seconds"] == 7
    assert [e["magic"] for e in standin.events("pet")] == [False, False, True]
    assert standin.events("close")[0] == {**standin.events("close")[0], "magic": True,
                                          "timer_running": False}
    assert device.pets == 1 and device.late == 1 and not device.is_open


def test_refusals_are_named_and_leave_nothing_open(standin: StandIn, tmp_path: Path) -> None:
    async def run() -> None:
        with pytest.raises(WatchdogDeviceError, match="refuses a 70000 s timeout"):
            await WatchdogDevice(standin.device).open(70000)
        holder = WatchdogDevice(standin.device)
        await holder.open(9)
        with pytest.raises(WatchdogDeviceError, match="another program holds it"):
            await WatchdogDevice(standin.device).open(9)
        holder.close()
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
        with pytest.raises(WatchdogDeviceError, match="not a watchdog"):
            await WatchdogDevice(plain).open(9)
        with pytest.raises(WatchdogDeviceError, match="cannot open"):
            await WatchdogDevice(tmp_path / "gone").open(9)

    asyncio.run(run())
    wait_for(lambda: len(standin.events("close")) == 2, 5, "both closes")
    assert all(e["magic"] and not e["timer_running"] for e in standin.events("close"))
    assert not standin.events("fire")


def test_the_device_is_petted_only_while_the_lease_would_fire_later(
        standin: StandIn) -> None:
    """A pet with less of the lease left than the device's timeout is dropped."""
    async def run() -> WatchdogClient:
        client = WatchdogClient(Notifier(), standin.device)
        assert await client.open_device(5) == 5
        now = time.monotonic()
        client.pet(Watchdog.LEASE, 5.5, now - 1.0)  # due in 4.5 s < 5: too late
        await client.settle(2)
        client.pet(Watchdog.LEASE, 4.9, now)  # still too late
        await client.settle(2)
        client.pet(Watchdog.LEASE, 5.5, now)  # due after 5 s: petted
        await client.settle(2)
        client.disarm()
        await client.settle(2)
        return client

    client = asyncio.run(run())
    assert client.device is not None
    assert (client.device.pets, client.device.late) == (1, 2)
    assert [e["magic"] for e in standin.events("pet")] == [False, False, True]  # open, pet, V


# ---------------------------------------------------------------- inside real daemons


def one_host_lab(tmp_path: Path, device: Path) -> LocalLab:
    """A one-host pool, armed, whose node.toml names the watchdog device."""
    lab = LocalLab(tmp_path / "lab")
    lab.provision(1, T)
    lab.prepare(1)
    lab.configure(1, T, lab_base_port())
    with (lab.host_dir(0) / "node.toml").open("a") as toml:
        toml.write(f'watchdog_device = "{device}"\n')
    lab.start(0, armed=True)
    return lab


def petting(lab: LocalLab, standin: StandIn) -> None:
    wait_for(lambda: len(standin.events("pet")) >= 5, 20, "the daemon to pet the device")
    timing = load(lab.host_dir(0) / "node.toml").timing
    assert standin.events("timeout")[0]["seconds"] == device_timeout(timing)
    assert lab.status()[0]["watchdog_device"]["timeout"] == device_timeout(timing)


@pytest.mark.slow
def test_a_clean_exit_does_the_magic_close(tmp_path: Path, standin: StandIn) -> None:
    lab = one_host_lab(tmp_path, standin.device)
    try:
        petting(lab, standin)
        os.kill(lab.pid(0), signal.SIGTERM)
        wait_for(lambda: not lab.running(0), 20, "the daemon to leave")
        wait_for(lambda: bool(standin.events("close")), 5, "the close")
        close = standin.events("close")[0]
        assert close["magic"] and not close["timer_running"]
        time.sleep(device_timeout(lab_timing(lab)) + 1.0)
        assert not standin.events("fire")
    finally:
        lab.down()


def lab_timing(lab: LocalLab) -> Timing:
    return load(lab.host_dir(0) / "node.toml").timing


@pytest.mark.slow
def test_a_stopped_daemon_stops_petting_and_the_device_fires(tmp_path: Path,
                                                            standin: StandIn) -> None:
    lab = one_host_lab(tmp_path, standin.device)
    try:
        petting(lab, standin)
        os.kill(lab.pid(0), signal.SIGSTOP)
        stopped = time.monotonic()
        timeout = device_timeout(lab_timing(lab))
        wait_for(lambda: bool(standin.events("fire")), timeout + 5, "the device to fire")
        last_pet = max(e["time"] for e in standin.events("pet"))
        fired = standin.events("fire")[0]["time"]
        print(f"last pet {last_pet - stopped:+.2f} s from SIGSTOP, fired "
              f"{fired - last_pet:.2f} s after it (timeout {timeout} s)")
        assert last_pet < stopped + 0.05  # nothing petted while stopped
        assert timeout <= fired - last_pet < timeout + 1.0
        # the watchdog process kills the stopped daemon: an unexpected close
        wait_for(lambda: bool(standin.events("close")), 5, "the watchdog process's kill")
        assert [e["magic"] for e in standin.events("close")] == [False]
    finally:
        lab.down()


@pytest.mark.slow
def test_a_fence_leaves_the_timer_running(tmp_path: Path, standin: StandIn) -> None:
    lab = one_host_lab(tmp_path, standin.device)
    try:
        petting(lab, standin)
        timing = lab_timing(lab)
        lab.pause(0, timing.stall_limit + 0.3)  # wakes stalled: fences itself
        assert timing.stall_limit + 0.3 < device_timeout(timing)  # before the device fires
        wait_for(lambda: not lab.running(0), 10, "the fenced daemon to exit")
        assert any(e["event"] == "fence" for e in lab.events())
        wait_for(lambda: bool(standin.events("fire")), device_timeout(timing)
                 + 5, "the device to fire")
        close = standin.events("close")[0]
        assert not close["magic"] and close["timer_running"]
    finally:
        lab.down()


@pytest.mark.slow
def test_a_file_that_is_no_watchdog_stops_the_start_with_the_reason(tmp_path: Path) -> None:
    plain = tmp_path / "not-a-watchdog"
    plain.write_bytes(b"")
    lab = one_host_lab(tmp_path, plain)
    try:
        wait_for(lambda: not lab.running(0), 20, "the daemon to stop")
        said = (lab.host_dir(0) / "node.out").read_text()
        assert "refuses a 2 s timeout" in said and "not a watchdog" in said, said
        events = list(lab.events())
        assert not any(e["event"] == "ha-on" for e in events)
        assert any(e["event"] == "stopping" and "not a watchdog" in e["reason"] for e in events)
    finally:
        lab.down()
