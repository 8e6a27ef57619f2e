"""The VM lifecycle on a real pool, through hactl as an operator drives it.

Local backend (no root): a protected VM's shutdown is refused with the
instruction to unprotect it, then allowed; what the operator halted and
suspended stays so after the master is killed, while a VM added with
vm-install is protected and restarted; a start that would overcommit the pool
needs --force and raises the alert. Every VM's disk is then checked for a
double run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.core.pool import VM, Host, Pool, Power, Priority
from hacluster.lab.local import LocalLab
from hacluster.lab.workloads import VM_SR, host_uuid, runs
from hacluster.model import poolfile
from hacluster.vm.records import double_runs

from ..conftest import lab_base_port, wait_for
from .test_mgmt_lab import armed_pool, hactl, master, ok

T = 3.0
pytestmark = pytest.mark.slow  # real pools of node daemons


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LocalLab]:
    with armed_pool(tmp_path) as pool:
        yield pool


def param(lab: LocalLab, vm: str, name: str) -> str:
    return ok(lab, "vm-param-get", f"uuid={vm}", f"param-name={name}")


def test_lifecycle_refusals_and_what_survives_a_master_kill(lab: LocalLab) -> None:
    # a protected VM cannot be shut down: the seed's instruction, and nothing changes
    code, _, err = hactl(lab, "vm-shutdown", "uuid=vm-sql")
    assert code != 0 and "Remove its protection first: vm-param-set uuid=vm-sql " \
        "ha-restart-priority=" in err, err
    assert param(lab, "vm-sql", "power-state") == "running"
    ok(lab, "vm-param-set", "uuid=vm-sql", "ha-restart-priority=")
    assert ok(lab, "vm-shutdown", "uuid=vm-sql").endswith("VM sql shut down")
    ok(lab, "vm-shutdown", "uuid=vm-batch")  # best-effort: HA would bring back a lost one
    ok(lab, "vm-suspend", "uuid=vm-dhcp")  # protected, suspended: HA never starts it

    # a VM added with vm-install is protected: HA starts it at once
    ok(lab, "vm-install", "name-label=added", "memory=300", "ha-restart-priority=restart")
    wait_for(lambda: param(lab, "added", "power-state") == "running", 20, "added to run")
    boss = master(lab)
    assert boss is not None
    boss_uuid = host_uuid(boss)
    added = param(lab, "added", "uuid")
    if param(lab, "added", "resident-on") != boss_uuid:  # put it where the kill lands
        assert "cold move" in ok(lab, "vm-migrate", "uuid=added", f"host={boss_uuid}")
    assert param(lab, "added", "resident-on") == boss_uuid

    killed = time.time()
    lab.kill(boss)
    wait_for(lambda: master(lab) not in (None, boss), 30, "a new master")
    wait_for(lambda: any(r.host != f"host{boss}" and r.first >= killed
                         for r in runs(lab.root).get(added, [])), 30,
             "added restarted on a survivor")
    time.sleep(3 * T)  # passes enough for a wrong restart to show
    assert param(lab, "vm-sql", "power-state") == "halted"
    assert param(lab, "vm-batch", "power-state") == "halted"
    assert param(lab, "vm-dhcp", "power-state") == "suspended"
    for vm in ("vm-sql", "vm-batch", "vm-dhcp"):
        assert not [r for r in runs(lab.root).get(vm, []) if r.first >= killed], \
            f"{vm} was started after the master kill"

    # a start that leaves the plan short is refused with the numbers, then --force
    ok(lab, "vm-install", "name-label=huge", "memory=3500")
    code, _, err = hactl(lab, "vm-start", "uuid=huge")
    assert code != 0 and "overcommitted" in err and "--force" in err, err
    assert param(lab, "huge", "power-state") == "halted"
    assert ok(lab, "vm-start", "uuid=huge", "--force").startswith("VM huge runs on host")
    wait_for(lambda: "ha_pool_overcommitted" in ok(lab, "message-list"), 10,
             "the overcommit alert")
    assert ok(lab, "vm-resume", "uuid=vm-dhcp", "--force").startswith("VM dhcp runs on")
    for vm, instances in runs(lab.root).items():
        assert not double_runs(instances), f"{vm} ran twice at once: {instances}"


def test_rebalance_brings_vms_home_by_hand_and_automatically(lab: LocalLab) -> None:
    boss = master(lab)
    others = [i for i in range(3) if i != boss]
    # the non-master hosts each run a webN in the default pool: find whose is whose
    web = {i: next(v for v in ("vm-web1", "vm-web2")
                   if param(lab, v, "resident-on") == host_uuid(i)) for i in others}
    first, second = others

    def away_then_back(index: int) -> None:
        killed = time.time()
        lab.kill(index)
        wait_for(lambda: any(r.host != f"host{index}" and r.first >= killed
                             for r in runs(lab.root).get(web[index], [])), 30,
                 f"{web[index]} restarted away from host{index}")
        lab.restart(index)
        wait_for(lambda: any(r.get("host") == index and r.get("phase") == "NORMAL"
                             for r in lab.status()), 30, f"host{index} back in the liveset")

    away_then_back(first)
    assert param(lab, web[first], "resident-on") != host_uuid(first)
    dry = ok(lab, "pool-ha-rebalance", "--dry-run")
    assert f"-> host{first} (home)" in dry, dry
    assert param(lab, web[first], "resident-on") != host_uuid(first)  # a dry run moves nothing
    assert "moved home" in ok(lab, "pool-ha-rebalance")
    assert param(lab, web[first], "resident-on") == host_uuid(first)

    ok(lab, "pool-param-set", "other-config:ha-rebalance=auto")
    away_then_back(second)
    wait_for(lambda: param(lab, web[second], "resident-on") == host_uuid(second), 30,
             f"{web[second]} moved home by the master itself")
    assert any(r["verb"] == "pool-ha-rebalance" and r["credential"] == "master:auto-rebalance"
               for r in json.loads(ok(lab, "audit-list", "--json")))
    for vm, instances in runs(lab.root).items():
        assert not double_runs(instances), f"{vm} ran twice at once: {instances}"


def test_the_next_order_group_waits_for_readiness_then_the_start_delay(
        tmp_path: Path) -> None:
    """A VM that takes 2 s to be ready (it says so with its ready file) holds the next
    order group back until then, and its start delay counts from there."""
    root = tmp_path / "lab"
    hosts = tuple(Host(host_uuid(i), f"host{i}", 4096) for i in range(3))
    slow_disk = root / VM_SR / "vm-slow.disk"
    slow = VM("vm-slow", "slow", 256, Priority.RESTART, 0, 1.0, Power.RUNNING, hosts[1].uuid,
              ready="file")
    after = VM("vm-after", "after", 256, Priority.RESTART, 1, 0.0, Power.RUNNING,
               hosts[1].uuid)
    command = [sys.executable, "-m", "hacluster.vm.guest", "--disk", str(slow_disk), "--vm",
               "vm-slow", "--host", "slow", "--boot", "2.0"]
    path = tmp_path / "pool.toml"
    path.write_text(poolfile.dump(poolfile.PoolFile(
        Pool(hosts, (slow, after), host_failures_to_tolerate=1), {"vm-slow": command})))
    lab = LocalLab(root)
    lab.up(3, T, base_port=lab_base_port(), pool=path)
    try:
        wait_for(lambda: master(lab) is not None and len(runs(root)) == 2, 15 * T,
                 "a master and both VMs")
        assert param(lab, "vm-slow", "ready") == "file"
        killed = time.time()
        lab.kill(1)

        def again(vm: str) -> float | None:
            return next((r.first for r in runs(root).get(vm, []) if r.first > killed), None)

        wait_for(lambda: again("vm-after") is not None, 40, "after restarted")
        started, followed = again("vm-slow"), again("vm-after")
        assert started is not None and followed is not None
        print(f"slow started at +{started - killed:.2f} s, after at +{followed - killed:.2f} s")
        assert followed - started >= 2.0 + 1.0 - 0.1  # ready after 2 s, then the 1 s delay
    finally:
        lab.down()
