"""Two networks (netns, root): one cut while the master dies, the pool carries on.

Every host has a second bridge (``lab up --networks 2``). Network 0, the one
every service prefers, is cut at every host (a black hole), then the master
is killed: the survivors agree over network 1, the new master restarts every
protected VM, and an operator's calls (relayed to the master, moving a VM to
another host through its agent) go over network 1 too. No VM runs twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.chaos.runner import protected_vms, vm_running
from hacluster.lab.local import MGMT_PORT_OFFSET
from hacluster.lab.netns import NetnsLab
from hacluster.lab.workloads import VM_SR, host_uuid, runs
from hacluster.vm.records import double_runs

from ..conftest import lab_base_port, wait_for
from .test_mgmt_lab import hactl, master

T = 3.0
pytestmark = [pytest.mark.slow, pytest.mark.netns]  # netns: skipped without root


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    pool = NetnsLab(tmp_path / "lab")
    pool.up(3, T, base_port=lab_base_port(), networks=2)
    try:
        wait_for(lambda: master(pool) is not None, 15 * T, "a master")
        yield pool
    finally:
        pool.down()


def test_a_cut_network_while_the_master_dies_restarts_every_protected_vm(
        lab: NetnsLab) -> None:
    boss = master(lab)
    assert boss is not None
    lab.cut(0)
    time.sleep(2 * T)  # network 1 alone carries the heartbeats: nobody may leave
    assert all(r.get("phase") == "NORMAL" and r.get("liveset") == [0, 1, 2]
               for r in lab.status()), lab.status()
    killed = time.time()
    lab.kill(boss)
    protected = protected_vms(lab.root)

    def all_running() -> bool:
        now = time.time()
        return all(vm_running(lab.root / VM_SR / f"{vm}.disk", now) for vm in protected)

    wait_for(lambda: master(lab) not in (None, boss) and all_running(), 40,
             "a new master and every protected VM running again over network 1")
    print(f"every protected VM ran again {time.time() - killed:.1f} s after the kill")
    new = master(lab)
    assert new is not None
    other = next(i for i in range(3) if i not in (boss, new))
    # the operator reaches the pool on network 1 only: the call lands on the member
    # that is not master, which relays it to the master, which moves a VM through
    # the member's agent
    member = f"{lab.ip(other, 1)}:{lab.load()['settings']['base_port'] + MGMT_PORT_OFFSET}"
    vm = next(v for v in ("vm-dhcp", "vm-sql")
              if hactl(lab, "-s", member, "vm-param-get", f"uuid={v}",
                       "param-name=resident-on")[1] != host_uuid(other))
    code, out, err = hactl(lab, "-s", member, "vm-migrate", f"uuid={vm}", f"host=host{other}")
    assert code == 0 and "cold move" in out, err
    wait_for(lambda: any(r.host == f"host{other}" and r.first > killed
                         for r in runs(lab.root).get(vm, [])), 10, f"{vm} on host{other}")
    lab.heal()
    for name, instances in runs(lab.root).items():
        assert not double_runs(instances), f"{name} ran twice at once: {instances}"
