"""What ``hacluster pool init`` writes runs a pool of real node processes, as a lab does.

Three hosts on 127.0.0.1-3 (no root): pool init writes the files and formats the SR
file, each host directory is copied whole to a "machine" directory of its own (as an
operator copies it to /etc/hacluster), node --check passes on each, the daemons
start with HA off, hactl with the printed operator/hactl.toml enables HA, a host is
killed and the pool fails over: new liveset, one master, its protected VMs running
again elsewhere (read from the guests' own disks).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hacluster.lab.docker import enable_ha
from hacluster.lab.workloads import VM_SR, default_pool, runs
from hacluster.model import poolfile
from hacluster.node.daemon import query_status
from hacluster.vm.records import double_runs

from ..conftest import wait_for

pytestmark = pytest.mark.slow  # real pools of node daemons
T = 3.0
HOSTS = 3


def hacluster(*words: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hacluster", *words], capture_output=True,
                          text=True, timeout=60, cwd=cwd, check=False)


def status(machine: Path) -> dict[str, Any]:
    try:
        return query_status(machine / "status.sock")
    except OSError:
        return {"phase": "DOWN"}


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[tuple[list[Path], Path, dict[int, int]]]:
    """The pool made by pool init, its hosts copied out and started; HA off."""
    base = 36000 + (os.getpid() % 400) * 4
    with (tmp_path / "sr.img").open("xb") as sr:
        sr.truncate(16 * 1024 * 1024)
    (tmp_path / "vms.toml").write_text(poolfile.dump(default_pool(HOSTS)))
    (tmp_path / VM_SR).mkdir()
    made = hacluster(
        "pool", "init", "--name", "real", "--hosts", "127.0.0.1,127.0.0.2,127.0.0.3",
        "--sr", "sr.img", "--out", "pool", "--timeout", f"{T:g}", "--pool", "vms.toml",
        "--vm-dir", str(tmp_path / VM_SR), "--heartbeat-port", str(base),
        "--agent-port", str(base + 1), "--mgmt-port", str(base + 2), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    machines = []
    for index in range(HOSTS):
        machine = tmp_path / "machines" / f"host{index}"
        shutil.copytree(tmp_path / "pool" / "hosts" / f"host{index}", machine)
        checked = hacluster("node", "--check", "--config", str(machine / "node.toml"),
                            cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        machines.append(machine)
    pids: dict[int, int] = {}
    try:
        for index, machine in enumerate(machines):
            with (machine / "node.out").open("ab") as out:
                pids[index] = subprocess.Popen(
                    [sys.executable, "-m", "hacluster", "node", "--config",
                     str(machine / "node.toml")], stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, cwd=machine).pid
        wait_for(lambda: all(status(m).get("phase") == "HA_OFF" for m in machines), 30,
                 "every host up with HA off")
        yield machines, tmp_path / "pool" / "operator" / "hactl.toml", pids
    finally:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for pid in pids.values():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def test_pool_init_output_runs_real_hosts_that_fail_over(
        machines: tuple[list[Path], Path, dict[int, int]], tmp_path: Path) -> None:
    hosts, hactl, pids = machines
    enable_ha(hactl, T, wait=60)
    wait_for(lambda: all(status(m).get("liveset") == [0, 1, 2] for m in hosts)
             and sum(bool(status(m).get("master")) for m in hosts) == 1, 15 * T,
             "HA on: every host in the liveset, one master")
    wait_for(lambda: {"vm-dhcp", "vm-sql", "vm-web1", "vm-web2"} <= set(runs(tmp_path)),
             10 * T, "the protected VMs running")
    checked = hacluster("node", "--check", "--config", str(hosts[1] / "node.toml"),
                        cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    assert "state ACTIVE (HA on)" in checked.stdout
    assert "written in this generation by hosts [0, 1, 2]" in checked.stdout
    killed = time.time()
    os.killpg(pids[0], signal.SIGKILL)  # host0 runs dhcp and sql
    survivors = hosts[1:]
    wait_for(lambda: all(status(m).get("liveset") == [1, 2] for m in survivors)
             and sum(bool(status(m).get("master")) for m in survivors) == 1, 15 * T,
             "failover: liveset [1, 2] with one master")

    def again(vm: str) -> str | None:
        return next((r.host for r in runs(tmp_path).get(vm, []) if r.first >= killed), None)

    wait_for(lambda: again("vm-dhcp") is not None and again("vm-sql") is not None, 30,
             "dhcp and sql restarted")
    assert {again("vm-dhcp"), again("vm-sql")} <= {"host1", "host2"}
    for vm, instances in runs(tmp_path).items():
        assert not double_runs(instances), f"{vm} ran twice at once: {instances}"
