"""An iSCSI LUN as a lab's heartbeat SR: a user-space target, one initiator per host.

Rules:

* One target per lab: ``tgtd`` (Debian's ``tgt``) on ``127.0.0.1`` at a free
  port, with its own control channel ``N``, serving as LUN 1 of
  :data:`TARGET_PREFIX` ``srN`` a backing file (the lab's formatted SR file),
  which tgt opens with ``O_DIRECT``.
* Each host logs in with its own initiator, its own iSCSI session and its own
  initiator name, as real hosts do. This machine has no kernel initiator, so
  the session is QEMU's (``qemu-nbd`` with ``qemu-block-extra``'s libiscsi
  driver, ``--cache=none``), exported as NBD to ``nbdfuse``, which shows the
  LUN as the file ``<mount>/sr`` (:data:`HOST_SR` in the host's directory).
  ``nbdfuse`` starts ``qemu-nbd`` itself (socket activation) and stops it when
  unmounted. Through this chain only ``O_DIRECT`` reads see another
  initiator's writes (the FUSE page cache is per mount), which is what the SR
  code uses.
* The programs run in their own sessions, so killing a host's daemon does
  not log its initiator out (a real host's kernel initiator outlives
  hacluster too).
* Needs root (tgtd's control socket under ``/run/tgtd``, FUSE mounts) and
  ``tgtd``, ``tgtadm``, ``qemu-nbd``, QEMU's iSCSI driver, ``nbdfuse`` and
  ``fusermount3``: :func:`missing` names what is absent before anything starts.
* Every process started is recorded (``record``) as soon as it runs, so
  :func:`stop` undoes a half-done :func:`serve`: it unmounts every initiator,
  stops the target (deleted, then killed if it lingers) and removes its
  control socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacluster.lab.poll import wait_until

TARGET_PREFIX = "iqn.2026-01.org.hacluster:"
MOUNT = "iscsi.d"  # a host's initiator mount, in its directory
HOST_SR = f"{MOUNT}/sr"  # a host's view of the LUN, relative to its directory
CONTROL_DIR = Path("/run/tgtd")
PROGRAMS = {"tgtd": "tgt", "tgtadm": "tgt", "qemu-nbd": "qemu-utils",
            "nbdfuse": "libnbd-bin", "fusermount3": "fuse3"}
START_LIMIT = 15.0  # seconds for a target or an initiator to come up


class IscsiError(OSError):
    """The iSCSI chain cannot be set up here, with what is missing or what failed
    (an OS error: the lab commands report it in one line, as any other)."""


def missing() -> list[str]:
    """What this machine lacks for the chain: root, programs (with their Debian
    packages), QEMU's iSCSI driver; empty when everything is there."""
    lacking = [] if os.geteuid() == 0 else ["root (tgtd's control socket, FUSE mounts)"]
    lacking += [f"{program} (package {package})" for program, package in PROGRAMS.items()
                if shutil.which(program) is None]
    if not _qemu_iscsi_driver():
        lacking.append("QEMU's iSCSI driver block-iscsi.so (package qemu-block-extra)")
    return lacking


def _qemu_iscsi_driver() -> bool:
    modules = Path("/usr/lib") / f"{os.uname().machine}-linux-gnu" / "qemu"
    return (modules / "block-iscsi.so").exists()


@dataclass(frozen=True)
class Target:
    """A running tgtd serving one LUN: where initiators reach it."""

    pid: int
    control: int  # tgtd's control channel number (``/run/tgtd/socket.N``)
    portal: str  # host:port
    iqn: str

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "control": self.control, "portal": self.portal,
                "iqn": self.iqn}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        return cls(int(data["pid"]), int(data["control"]), str(data["portal"]),
                   str(data["iqn"]))


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise IscsiError(f"{' '.join(command)} failed: "
                         f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _free_control() -> int:
    """A tgtd control channel no running tgtd holds (tgtd locks ``socket.N.lock``)."""
    CONTROL_DIR.mkdir(parents=True, exist_ok=True)
    start = 1000 + int.from_bytes(os.urandom(2), "big") % 30000
    for number in range(start, start + 2000):
        lock = CONTROL_DIR / f"socket.{number}.lock"
        if not lock.exists():
            return number
        with lock.open("a") as held:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            fcntl.flock(held, fcntl.LOCK_UN)
            return number
    raise IscsiError(f"no free tgtd control channel in {CONTROL_DIR}")


def _tgtadm(control: int, *words: str) -> str:
    return _run("tgtadm", "-C", str(control), "--lld", "iscsi", *words)


def start_target(backing: Path, log: Path, record: Callable[[Target], None]) -> Target:
    """Start a tgtd serving ``backing`` as LUN 1 to initiators on loopback; ``record``
    gets it as soon as its process runs."""
    lacking = missing()
    if lacking:
        raise IscsiError("the iSCSI SR needs " + ", ".join(lacking))
    port, control = _free_port(), _free_control()
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["tgtd", "--foreground", "--control-port", str(control),
             "--iscsi", f"portal=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    target = Target(process.pid, control, f"127.0.0.1:{port}", f"{TARGET_PREFIX}sr{control}")
    record(target)
    socket_file = CONTROL_DIR / f"socket.{control}"
    if wait_until(lambda: socket_file.exists() or process.poll() is not None,
                  START_LIMIT) is None or process.poll() is not None:
        raise IscsiError(f"tgtd did not start (see {log})")
    _tgtadm(control, "--mode", "target", "--op", "new", "--tid", "1",
            "--targetname", target.iqn)
    _tgtadm(control, "--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1",
            "--backing-store", str(backing), "--bsoflags", "direct")
    _tgtadm(control, "--mode", "target", "--op", "bind", "--tid", "1",
            "--initiator-address", "127.0.0.1")
    return target


def sessions(target: Target) -> list[str]:
    """The initiator names logged in to ``target`` now."""
    shown = _tgtadm(target.control, "--mode", "target", "--op", "show")
    return [line.split("Initiator:", 1)[1].split()[0] for line in shown.splitlines()
            if "Initiator:" in line]


def attach(target: Target, mount: Path, initiator: str, log: Path,
           record: Callable[[int], None]) -> Path:
    """Log in to ``target`` as ``initiator`` and show its LUN as ``mount/sr``; ``record``
    gets the pid of the nbdfuse process as soon as it runs. Returns the file."""
    image = ",".join([
        "driver=raw", "file.driver=iscsi", "file.transport=tcp",
        f"file.portal={target.portal}", f"file.target={target.iqn}", "file.lun=1",
        f"file.initiator-name={initiator}"])
    return mount_nbd(["qemu-nbd", "--cache=none", "--image-opts", image], mount, log, record,
                     f"the initiator {initiator}")


def mount_nbd(server: list[str], mount: Path, log: Path, record: Callable[[int], None],
              what: str) -> Path:
    """Show the NBD export of ``server`` (started by nbdfuse, socket activation) as
    ``mount/sr``; ``record`` gets nbdfuse's pid as soon as it runs."""
    mount.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(["nbdfuse", str(mount / "sr"), "[", *server, "]"],
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    record(process.pid)
    if wait_until(lambda: os.path.ismount(mount) or process.poll() is not None,
                  START_LIMIT) is None or not os.path.ismount(mount):
        raise IscsiError(f"{what} did not mount {mount} (see {log})")
    return mount / "sr"


def detach(mount: Path, pid: int) -> None:
    """Unmount an initiator's file (lazily: a killed daemon may still hold it) and
    make sure its nbdfuse (and so its qemu-nbd) is gone."""
    subprocess.run(["fusermount3", "-u", "-z", str(mount)], capture_output=True, check=False)
    _end(pid)


def stop_target(target: Target) -> None:
    """Delete the target and stop tgtd; kill it if it lingers; remove its socket."""
    with contextlib.suppress(IscsiError):
        _tgtadm(target.control, "--mode", "target", "--op", "delete", "--force",
                "--tid", "1")
    with contextlib.suppress(IscsiError):
        _run("tgtadm", "-C", str(target.control), "--mode", "system", "--op", "delete")
    _end(target.pid)
    for leftover in (f"socket.{target.control}", f"socket.{target.control}.lock"):
        with contextlib.suppress(FileNotFoundError):
            (CONTROL_DIR / leftover).unlink()


def _end(pid: int, grace: float = 3.0) -> None:
    """Wait ``grace`` seconds for ``pid`` to exit, then SIGKILL its process group."""
    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        try:  # not our child: gone, or a zombie its new parent has not reaped yet
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    if wait_until(gone, grace) is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(gone, grace)


# ---------------------------------------------------------------- a lab's chain
def serve(root: Path, hosts: int, data: dict[str, Any],
          save: Callable[[dict[str, Any]], None]) -> None:
    """Serve the lab's SR file ``root/heartbeat.sr`` as an iSCSI LUN and give each
    host its own initiator at ``hostN/`` + :data:`HOST_SR`. Progress is kept in
    ``data["iscsi"]`` (saved with ``save`` after every process started)."""
    state: dict[str, Any] = {"target": None, "initiators": {}}
    data["iscsi"] = state

    def keep_target(target: Target) -> None:
        state["target"] = target.as_dict()
        save(data)

    target = start_target(root / "heartbeat.sr", root / "tgtd.out", keep_target)
    for index in range(hosts):
        directory = root / f"host{index}"
        directory.mkdir(exist_ok=True)

        def keep(pid: int, index: int = index) -> None:
            state["initiators"][str(index)] = pid
            save(data)

        attach(target, directory / MOUNT, f"{target.iqn}-host{index}",
               directory / "iscsi.out", keep)


def stop(root: Path, data: dict[str, Any]) -> None:
    """Undo :func:`serve`, however far it got."""
    state = data.get("iscsi")
    if not state:
        return
    for index, pid in state.get("initiators", {}).items():
        detach(root / f"host{index}" / MOUNT, int(pid))
    if state.get("target"):
        stop_target(Target.from_dict(state["target"]))
