"""contrib/systemd/hacluster-node.service under a real systemd, in a container.

Rules:

* Nothing is mocked: the image's init is systemd (tools/build-systemd-image.sh:
  a debootstrapped Debian with systemd, and the project from the wheelhouse;
  built on first use, reused while the source is unchanged), the unit is the
  shipped file, the daemons are real and so is the pool they form.
* One container holds a two-host pool (both hosts on its loopback, one SR
  file): host 0 runs the shipped unit verbatim, its node.toml at
  /etc/hacluster/node.toml; host 1 runs the same file as
  ``hacluster-peer.service`` with its own config; a drop-in sets the test's
  ``WatchdogSec=`` and ``RestartSec=`` for both. The files come from a local
  lab (:class:`~hacluster.lab.local.LocalLab` writes them), bind-mounted at
  the same path. HA is enabled with ``hactl`` as an operator does.
* It shows: the unit reports ready with its STATUS=; an idle node (HA off)
  outlives ``WatchdogSec=``; a SIGSTOPped daemon is killed by systemd's
  watchdog, its workloads with it, and is restarted and rejoins; a fenced
  daemon (exit 75) is restarted and rejoins; ``systemctl stop`` is a clean
  stop that stays down.
* The engine is started when it does not answer and we are root; without
  docker the test skips with the reason, except under CI (``CI`` set), where
  it fails.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.lab.local import LocalLab
from hacluster.lab.poll import wait_until
from hacluster.node.config import load

from ..conftest import wait_for
from .test_docker import LOCK, ROOT, _engine, _run

pytestmark = [pytest.mark.docker, pytest.mark.slow]
IMAGE = "hacluster-systemd:latest"
UNIT = ROOT / "contrib" / "systemd" / "hacluster-node.service"
T = 20.0  # stall limit 10 s; the watchdog process fires a lease (<= 20 s) after the
# evidence that vouched for the host, which is up to a few beats (2 s each) old
WATCHDOG_SEC = 14  # >= T/2 + 1 (no warning), < the lease left: systemd's watchdog acts first
PAUSE = 11.0  # past the stall limit (a fence on waking), short of WATCHDOG_SEC - 1 s
DROP_IN = f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\nRestartSec=1s\n"


@pytest.fixture(scope="module")
def image() -> None:
    """The engine and the systemd image, or a skip (a failure in CI)."""
    with LOCK.open("w") as lock:  # the wheelhouse is shared with tests/lab/test_docker.py
        fcntl.flock(lock, fcntl.LOCK_EX)
        reason = _engine()
        if reason is None:
            built = _run(str(ROOT / "tools" / "build-systemd-image.sh"), timeout=1800,
                         check=False)
            if built.returncode != 0:
                reason = f"tools/build-systemd-image.sh failed: {built.stderr.strip()[-2000:]}"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the systemd unit test cannot run in CI: {reason}")
        pytest.skip(reason)


class Box:
    """One container whose init is systemd."""

    def __init__(self, name: str, shared: Path) -> None:
        self.name = name
        cgroup2 = os.statvfs("/sys/fs/cgroup").f_fsid == 0 and \
            Path("/sys/fs/cgroup/cgroup.controllers").exists()
        _run("docker", "run", "-d", "--name", name, "--hostname", "sdhost",
             # systemd needs to mount and to manage its cgroups; all capabilities
             # (--privileged) are more than some engines may grant
             "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
             "--security-opt", "apparmor=unconfined", "-e", "container=docker",
             "--tmpfs", "/run", "--tmpfs", "/run/lock",
             *(["--cgroupns", "private"] if cgroup2 else
               ["-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]),
             "-v", f"{shared}:{shared}", IMAGE, "/lib/systemd/systemd")

    def sh(self, command: str, check: bool = True, timeout: float = 60) -> str:
        return _run("docker", "exec", self.name, "sh", "-c", command, check=check,
                    timeout=timeout).stdout.strip()

    def show(self, unit: str, *names: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {n}" for n in names))
        return dict(line.split("=", 1) for line in out.splitlines())

    def journal(self, unit: str) -> str:
        return self.sh(f"journalctl -u {unit} --no-pager -o cat", check=False)

    def unit_pids(self, unit: str) -> set[int]:
        group = self.show(unit, "ControlGroup")["ControlGroup"]
        out = self.sh(f"cat /sys/fs/cgroup/systemd{group}/cgroup.procs "
                      f"/sys/fs/cgroup{group}/cgroup.procs 2>/dev/null", check=False)
        return {int(p) for p in out.split()}

    def alive(self, pids: set[int]) -> set[int]:
        out = self.sh(" ".join(f"kill -0 {p} 2>/dev/null && echo {p};" for p in pids) or "true",
                      check=False)
        return {int(p) for p in out.split()}

    def explain(self) -> str:
        return "\n".join([self.sh("systemctl status --no-pager -l hacluster-node "
                                  "hacluster-peer", check=False),
                          self.journal("hacluster-node")[-3000:]])

    def remove(self) -> None:
        _run("docker", "rm", "-f", self.name, check=False)


@pytest.fixture
def box(image: None, tmp_path: Path) -> Iterator[tuple[Box, LocalLab]]:
    lab = LocalLab(tmp_path / "lab")
    lab.provision(2, T, ha_off=True)
    lab.prepare(2)
    lab.configure(2, T, 17000)
    container = Box(f"hacluster-sd-{os.getpid()}", tmp_path)
    try:
        wait_for(lambda: container.sh("systemctl is-system-running", check=False)
                 in ("running", "degraded"), 60, "systemd to boot")
        unit = UNIT.read_text()
        assert "/etc/hacluster/node.toml" in unit
        (tmp_path / "hacluster-peer.service").write_text(
            unit.replace("/etc/hacluster/node.toml", str(lab.host_dir(1) / "node.toml")))
        (tmp_path / "test.conf").write_text(DROP_IN)
        (tmp_path / "hacluster-node.service").write_bytes(UNIT.read_bytes())  # verbatim
        container.sh(
            f"ln -s {lab.host_dir(0)} /etc/hacluster && "
            f"cp {tmp_path}/hacluster-node.service /etc/systemd/system/ && "
            f"cp {tmp_path}/hacluster-peer.service /etc/systemd/system/ && "
            "for u in hacluster-node hacluster-peer; do "
            "mkdir -p /etc/systemd/system/$u.service.d && "
            f"cp {tmp_path}/test.conf /etc/systemd/system/$u.service.d/; done && "
            "systemctl daemon-reload && systemctl start hacluster-peer hacluster-node")
        yield container, lab
    finally:
        container.remove()


def status_text(box: Box) -> str:
    return box.show("hacluster-node", "StatusText")["StatusText"]


def armed(box: Box) -> bool:
    return status_text(box).endswith("liveset 2 of 2")


def restarted(box: Box, restarts: int, old_pid: str) -> bool:
    shown = box.show("hacluster-node", "NRestarts", "ActiveState", "MainPID")
    return (shown["NRestarts"] == str(restarts) and shown["ActiveState"] == "active"
            and shown["MainPID"] not in ("0", old_pid))


def test_the_unit_under_systemd(box: tuple[Box, LocalLab]) -> None:
    container, lab = box
    try:
        _scenario(container, lab)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- in the container:\n{container.explain()}") from None


def _scenario(box: Box, lab: LocalLab) -> None:
    # ready, with its status, and an idle node outlives WatchdogSec
    shown = box.show("hacluster-node", "ActiveState", "StatusText", "WatchdogUSec", "Type",
                     "KillMode", "NRestarts")
    assert shown == {"ActiveState": "active", "StatusText": "HA off",
                     "WatchdogUSec": f"{WATCHDOG_SEC}s", "Type": "notify", "KillMode": "mixed",
                     "NRestarts": "0"}, shown
    time.sleep(WATCHDOG_SEC + 2)
    shown = box.show("hacluster-node", "ActiveState", "NRestarts", "StatusText")
    assert shown == {"ActiveState": "active", "NRestarts": "0", "StatusText": "HA off"}, shown
    assert "warning" not in box.journal("hacluster-node")

    box.sh(f"/opt/hacluster/bin/hactl --config {lab.root}/hactl.toml "
           f"pool-ha-enable ha-config:timeout={T:g}")
    wait_for(lambda: armed(box), 60, "HA on, both hosts in the liveset")
    print(f"armed: {status_text(box)!r}")

    # a paused daemon is killed by systemd's watchdog, its workloads with it
    wait_for(lambda: len(box.unit_pids("hacluster-node")) >= 3, 30,
             "the daemon, its watchdog process and a guest in the unit")
    pid = box.show("hacluster-node", "MainPID")["MainPID"]
    before = box.unit_pids("hacluster-node")
    box.sh(f"kill -STOP {pid}")
    stopped = time.monotonic()
    wait_for(lambda: restarted(box, 1, pid), 60, "systemd's watchdog to kill and restart it")
    print(f"killed and restarted {time.monotonic() - stopped:.1f} s after SIGSTOP")
    journal = box.journal("hacluster-node")
    assert f"Watchdog timeout (limit {WATCHDOG_SEC}s)!" in journal
    assert not box.alive(before), "a process of the killed unit outlived it"
    wait_for(lambda: armed(box), 90, "the restarted node to rejoin")
    print(f"rejoined: {status_text(box)!r}")

    # a fenced daemon (a pause past the stall limit: it fences on waking) exits 75,
    # is restarted and rejoins
    timing = load(lab.host_dir(0) / "node.toml").timing
    assert timing.stall_limit < PAUSE < WATCHDOG_SEC - 1
    pid = box.show("hacluster-node", "MainPID")["MainPID"]
    box.sh(f"kill -STOP {pid} && sleep {PAUSE} && kill -CONT {pid}")
    wait_for(lambda: restarted(box, 2, pid), 60, "the fenced node to be restarted")
    journal = box.journal("hacluster-node")
    assert "status=75/TEMPFAIL" in journal
    assert journal.count("Watchdog timeout") == 1  # the fence was the daemon's, not systemd's
    wait_for(lambda: armed(box), 90, "the fenced node to rejoin")

    # a clean stop stays down
    box.sh("systemctl stop hacluster-node", timeout=90)
    shown = box.show("hacluster-node", "ActiveState", "Result")  # (a stop resets NRestarts)
    assert shown == {"ActiveState": "inactive", "Result": "success"}, shown
    assert wait_until(lambda: box.show("hacluster-node", "ActiveState")["ActiveState"]
                      != "inactive", 5) is None
