"""Restarts of real workloads on real pools (local backend; netns as root).

What ran where is read from the guests' own disk records, not from the daemons."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.core.pool import VM, Host, Pool, Power, Priority
from hacluster.lab.local import LabError, LocalLab
from hacluster.lab.netns import NetnsLab
from hacluster.lab.workloads import START_DELAY, runs
from hacluster.model import poolfile
from hacluster.node.config import load
from hacluster.vm.guest import halt_file
from hacluster.vm.records import Instance, double_runs

from ..conftest import lab_base_port, wait_for

T = 3.0
pytestmark = pytest.mark.slow  # real pools of node daemons
NETNS = pytest.param("netns", marks=pytest.mark.netns)  # skipped without root (conftest)


def start_lab(root: Path, backend: str, pool: Path | None = None) -> LocalLab:
    lab = NetnsLab(root) if backend == "netns" else LocalLab(root)
    lab.up(3, T, base_port=lab_base_port(), pool=pool)
    return lab


@pytest.fixture(params=["local", NETNS])
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalLab]:
    pool = start_lab(tmp_path / "lab", request.param)
    try:
        wait_for(lambda: sum(bool(r.get("master")) for r in pool.status()) == 1, 15 * T,
                 "a master")
        wait_for(lambda: len(runs(pool.root)) == 6, 10.0, "every VM's first record")
        yield pool
    finally:
        pool.down()


def run_after(lab: LocalLab, vm: str, t: float) -> Instance | None:
    return next((r for r in runs(lab.root).get(vm, []) if r.first >= t), None)


def no_double_runs(lab: LocalLab) -> None:
    for vm, instances in runs(lab.root).items():
        assert not double_runs(instances), f"{vm} ran twice at once: {instances}"


def test_master_crash_restarts_protected_vms_in_order(lab: LocalLab) -> None:
    killed = time.time()
    lab.kill(0)
    wait_for(lambda: all(run_after(lab, vm, killed) for vm in ("vm-dhcp", "vm-sql",
                                                                 "vm-batch")),
             30.0, "dhcp, sql and batch running again")
    dhcp, sql, batch = (run_after(lab, vm, killed) for vm in ("vm-dhcp", "vm-sql", "vm-batch"))
    assert dhcp and sql and batch
    assert {dhcp.host, sql.host, batch.host} <= {"host1", "host2"}
    # order 0 first; order 1 only after dhcp's start delay; best-effort after all protected
    assert sql.first - dhcp.first >= START_DELAY * 0.95, (dhcp, sql)
    assert batch.first >= sql.first
    timing = load(lab.host_dir(1) / "node.toml").timing
    assert dhcp.first - killed <= timing.T + timing.fence_window + 4 * timing.t1 + 2.0
    time.sleep(2 * T)
    assert run_after(lab, "vm-scratch", killed) is None, "an unprotected VM was restarted"
    no_double_runs(lab)
    alerts = [e for e in lab.events() if e["event"] == "alert"]
    assert any(a["name"] == "ha_host_failed" and a["obj"] == "host-0000" for a in alerts)


def test_internal_shutdown_restarts_only_protected_vms(lab: LocalLab) -> None:
    stopped = time.time()
    halt_file(lab.root / "vm-sr" / "vm-web2.disk").touch()
    halt_file(lab.root / "vm-sr" / "vm-scratch.disk").touch()
    wait_for(lambda: run_after(lab, "vm-web2", stopped) is not None, 20.0,
             "the protected VM restarted after its guest shut down")
    time.sleep(2 * T)
    assert run_after(lab, "vm-scratch", stopped) is None
    assert [r.ended for r in runs(lab.root)["vm-scratch"]] == ["halt"]
    no_double_runs(lab)


@pytest.mark.parametrize("backend", ["local", NETNS])
def test_overcommitted_pool_raises_the_alert(tmp_path: Path, backend: str) -> None:
    hosts = tuple(Host(f"host-{i:04}", f"host{i}", 1024) for i in range(3))
    vms = tuple(VM(f"vm-big{i}", f"big{i}", 700, Priority.RESTART, power=Power.RUNNING,
                   resident=hosts[i].uuid) for i in range(3))
    path = tmp_path / "pool.toml"
    path.write_text(poolfile.dump(poolfile.PoolFile(Pool(hosts, vms,
                                                          host_failures_to_tolerate=1))))
    lab = start_lab(tmp_path / "lab", backend, pool=path)
    try:
        wait_for(lambda: any(e["event"] == "alert" and e["name"] == "ha_pool_overcommitted"
                             for e in lab.events()), 15 * T, "the overcommit alert")
        # the alert can come before the master's duties publish their plan
        wait_for(lambda: any(r.get("pool", {}).get("plan") for r in lab.status()), 15 * T,
                 "the master's plan in its status")
        plan = next(r["pool"]["plan"] for r in lab.status() if r.get("pool", {}).get("plan"))
        assert plan["overcommitted"] and plan["max_failures"] == 0 and plan["exact"]
    finally:
        lab.down()


def test_a_pool_file_that_does_not_match_the_lab_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(poolfile.dump(poolfile.PoolFile(Pool((Host("a", "a", 1024),)))))
    with pytest.raises(LabError, match="lists 1 hosts; the lab has 3"):
        start_lab(tmp_path / "lab", "local", pool=path)
    assert not (tmp_path / "lab" / "lab.json").exists()


def test_a_vm_that_fails_to_start_at_ha_enable_is_logged_as_failed(tmp_path: Path) -> None:
    hosts = tuple(Host(f"host-{i:04}", f"host{i}", 1024) for i in range(3))
    broken = VM("vm-broken", "broken", 100, Priority.BEST_EFFORT, power=Power.RUNNING,
                resident=hosts[0].uuid)
    path = tmp_path / "pool.toml"
    path.write_text(poolfile.dump(poolfile.PoolFile(
        Pool(hosts, (broken,)), {"vm-broken": ["sh", "-c", "echo no disk >&2; exit 3"]})))
    lab = start_lab(tmp_path / "lab", "local", pool=path)
    try:
        wait_for(lambda: any(e["event"] == "vm-start-failed" for e in lab.events()), 10.0,
                 "the failed start to be logged")
        at_enable = [e for e in lab.events() if e.get("why") == "HA enable"]
        assert [e["event"] for e in at_enable] == ["vm-start-failed"]
        assert "no disk" in at_enable[0]["error"]
    finally:
        lab.down()


def test_kill_all_then_restart_all_re_forms_the_pool_with_every_protected_vm(
        lab: LocalLab) -> None:
    """A power cut: every host killed, then started again joining. With no armed
    host left they cold-start from the last liveset on the SR: HA on, one
    master, every protected VM running again, no emergency verb."""
    pool = poolfile.load(lab.root / "pool.toml").pool
    protected = [vm.uuid for vm in pool.vms if vm.priority.protected]
    cut = time.time()
    assert lab.kill_all() == [0, 1, 2]
    wait_for(lambda: not any(lab.running(i) for i in range(3)), 10.0, "every host down")
    assert lab.restart_all() == [0, 1, 2]
    with pytest.raises(LabError, match="every host is running"):
        lab.restart_all()
    wait_for(lambda: sum(bool(r.get("master")) for r in lab.status()) == 1
             and all(r.get("phase") == "NORMAL" and r.get("liveset") == [0, 1, 2]
                     for r in lab.status()), 15 * T, "the pool to re-form with one master")
    formed = time.time()
    wait_for(lambda: all((r := run_after(lab, vm, cut)) is not None and r.ended is None
                         for vm in protected), 10 * T, "every protected VM running again")
    print(f"kill all -> restart all: pool re-formed {formed - cut:.1f} s after the cut, "
          f"protected VMs {protected} running {time.time() - cut:.1f} s after it")
    starts = [e for e in lab.events() if e["event"] == "phase" and e.get("new") == "NORMAL"
              and e["time"] > cut]
    assert any("armed with" in e["why"] for e in starts)
    waits = [e for e in lab.events() if e["event"] == "waiting" and e["time"] > cut]
    assert any("cold start" in w for e in waits for w in e["waits"])
    assert not [e for e in lab.events() if "emergency" in json.dumps(e)]
    no_double_runs(lab)
