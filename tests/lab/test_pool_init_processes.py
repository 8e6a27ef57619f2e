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

from ..conftest import lab_base_port, wait_for

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
    # below the kernel's ephemeral ports (a client socket of another test once took
    # 127.0.0.1:36612 first, "Address already in use"): lab_base_port says how
    base = lab_base_port()
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


def hactl(config: Path, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hacluster.mgmt.hactl", "--config",
                           str(config), *words], capture_output=True, text=True, timeout=120,
                          check=False)


def test_a_host_added_by_add_host_joins_with_pool_join_run_against_it(
        machines: tuple[list[Path], Path, dict[int, int]], tmp_path: Path) -> None:
    hosts, operator, pids = machines
    enable_ha(operator, T, wait=60)
    wait_for(lambda: all(status(m).get("liveset") == [0, 1, 2] for m in hosts), 15 * T,
             "HA on: every host in the liveset")
    first = tmp_path / "machines" / "host0" / "node.toml"
    port = int(first.read_text().split("mgmt_port = ")[1].split()[0])
    heartbeat = port - 2
    refused = hacluster("pool", "add-host", "--pool", "pool", "--address",
                        f"127.0.0.2:{heartbeat}", cwd=tmp_path)
    assert refused.returncode == 2 and "host1 of the pool has it" in refused.stderr
    added = hacluster("pool", "add-host", "--pool", "pool", "--address",
                      f"127.0.0.4:{heartbeat}", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert f"-s 127.0.0.4:{port} pool-join" in added.stdout
    new = tmp_path / "machines" / "host3"
    shutil.copytree(tmp_path / "pool" / "hosts" / "host3", new)
    checked = hacluster("node", "--check", "--config", str(new / "node.toml"), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "waiting to join as 'host3'" in checked.stdout
    with (new / "node.out").open("ab") as out:
        pids[3] = subprocess.Popen(
            [sys.executable, "-m", "hacluster", "node", "--config", str(new / "node.toml")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=new).pid
    wait_for(lambda: status(new).get("phase") == "WAITING TO JOIN", 30, "host3 waiting")
    waiting_file = (new / "node.toml").read_text()

    other = hactl(operator, "-s", f"127.0.0.4:{port}", "host-list")
    assert other.returncode == 1 and "answers only pool-join" in other.stderr
    master = next(i for i, m in enumerate(hosts) if status(m).get("master"))
    wrong = 1 if master != 1 else 2
    not_master = hactl(operator, "-s", f"127.0.0.4:{port}", "pool-join",
                       f"master-address=127.0.0.{wrong + 1}")
    assert not_master.returncode == 1 and "is not the pool's master" in not_master.stderr
    assert (new / "node.toml").read_text() == waiting_file  # a refusal changes nothing

    joined = hactl(operator, "-s", f"127.0.0.4:{port}", "--json", "pool-join",
                   f"master-address=127.0.0.{master + 1}")
    assert joined.returncode == 0, joined.stderr
    assert '"index": 3' in joined.stdout
    everyone = [*hosts, new]
    wait_for(lambda: all(status(m).get("liveset") == [0, 1, 2, 3] for m in everyone)
             and sum(bool(status(m).get("master")) for m in everyone) == 1, 15 * T,
             "4 hosts in every liveset, one master")
    audit = hactl(operator, "--json", "audit-list", "verb=pool-admit")
    assert audit.returncode == 0 and '"pool-admit"' in audit.stdout, audit.stderr

    os.killpg(pids[master], signal.SIGKILL)
    rest = [m for i, m in enumerate(everyone) if i != master]
    left = sorted({0, 1, 2, 3} - {master})
    wait_for(lambda: all(status(m).get("liveset") == left for m in rest)
             and sum(bool(status(m).get("master")) for m in rest) == 1, 15 * T,
             f"failover to {left} with one master, the joined host among them")
