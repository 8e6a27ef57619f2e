"""Moving a real pool's heartbeat SR, through hactl as an operator does it.

Local backend (no root). Every host maps two more SRs: the lab's shared spare
(``spare-sr``) and ``private-sr``, a file of each host's own. Enabling HA on
``private-sr`` is refused (the hosts do not share it) and changes nothing; on
``spare-sr`` the pool moves: the old SR is left INVALID, the new one holds the
generation the database records, a master kill fails over there, the killed
host comes back on it, and re-enabling on the first SR moves the pool back.
Every VM's disk is then checked for a double run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.lab.local import SPARE_SR, SPARE_SR_FILE, SR_FILE, LocalLab
from hacluster.lab.workloads import host_uuid, runs
from hacluster.node.keyfiles import read_key
from hacluster.storage.sr import BlockDevice, GlobalBlock
from hacluster.storage.volume import create_sr_file
from hacluster.vm.records import double_runs

from ..conftest import lab_base_port, wait_for
from .test_mgmt_lab import armed_pool, hactl, master, ok

T = 3.0
PROTECTED = ("vm-dhcp", "vm-sql", "vm-web1", "vm-web2")
pytestmark = pytest.mark.slow  # real pools of node daemons


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LocalLab]:
    """Three hosts, HA off, each also mapping ``private-sr`` to a file of its own."""
    pool = LocalLab(tmp_path / "lab")
    pool.up(3, T, base_port=lab_base_port(), ha_off=True)
    try:
        pool.kill_all()
        for index in range(3):
            directory = pool.host_dir(index)
            create_sr_file(directory / "private.sr")
            node = directory / "node.toml"
            text = node.read_text()
            assert SPARE_SR in text
            node.write_text(text.replace(f'{{"{SPARE_SR}"', '{"private-sr" = "private.sr", '
                                         f'"{SPARE_SR}"'))
        pool.restart_all()
        pool.wait_answering(range(3))
        wait_for(lambda: ok(pool, "pool-param-get", "param-name=ha-enabled") == "false",
                 30, "the master's database")
        yield pool
    finally:
        pool.down()


def header(lab: LocalLab, name: str) -> GlobalBlock:
    device = BlockDevice(lab.root / name)
    try:
        return GlobalBlock.decode(device.read(0), read_key(lab.root / "pool.key"))
    finally:
        device.close()


def statefile(lab: LocalLab) -> str:
    return ok(lab, "pool-param-get", "param-name=ha-statefiles")


def running_elsewhere(lab: LocalLab, dead: int) -> bool:
    dead_uuid = host_uuid(dead)
    return all(ok(lab, "vm-param-get", f"uuid={vm}", "param-name=power-state") == "running"
               and ok(lab, "vm-param-get", f"uuid={vm}", "param-name=resident-on") != dead_uuid
               for vm in PROTECTED)


def test_a_pool_moves_to_a_shared_sr_fails_over_there_and_moves_back(lab: LocalLab) -> None:
    before = header(lab, SR_FILE)

    code, _, err = hactl(lab, "pool-ha-enable", "heartbeat-sr-uuids=private-sr")
    assert code != 0 and "not one volume shared by every host" in err, err
    assert err.count("another volume than the master's") == 2, err  # the two others
    assert ok(lab, "pool-param-get", "param-name=ha-enabled") == "false"
    assert statefile(lab) == "" and header(lab, SR_FILE) == before  # nothing else changed

    code, out, err = hactl(lab, "pool-ha-enable", f"heartbeat-sr-uuids={SPARE_SR}",
                           f"ha-config:timeout={T:g}")
    assert code == 0 and "every host reads the same volume" in err, err
    assert statefile(lab) == SPARE_SR
    generation = int(out.split("HA enabled: generation ")[1].split(",")[0])
    moved = header(lab, SPARE_SR_FILE)
    assert moved.state.name == "ACTIVE" and moved.generation == generation != before.generation
    wait_for(lambda: master(lab) is not None, 10 * T, "a master on the new SR")

    boss = master(lab)
    assert boss is not None
    killed = time.time()
    lab.kill(boss)
    wait_for(lambda: master(lab) not in (None, boss), 10 * T, "a new master")
    wait_for(lambda: running_elsewhere(lab, boss), 10 * T, "every protected VM on a survivor")
    assert header(lab, SR_FILE) == before  # the first SR stays as it was, not active
    lab.restart(boss)
    wait_for(lambda: any(r.get("host") == boss and r.get("phase") == "NORMAL"
                         for r in lab.status()), 10 * T, "the killed host back, armed")
    starts = [e for e in lab.events() if e.get("event") == "start" and e.get("host") == boss]
    assert starts[-1]["sr"] == SPARE_SR and starts[-1]["time"] > killed
    assert {r["heartbeat_sr"]["uuid"] for r in lab.status()} == {SPARE_SR}  # every host

    ok(lab, "pool-ha-disable")
    assert header(lab, SPARE_SR_FILE).state.name == "INVALID"
    code, _, back = hactl(lab, "pool-ha-enable", "heartbeat-sr-uuids=heartbeat-sr")
    assert code == 0 and "moving the pool database from heartbeat SR spare-sr to " \
        "heartbeat-sr" in back, back
    assert statefile(lab) == "heartbeat-sr" and header(lab, SR_FILE).state.name == "ACTIVE"
    for vm, instances in runs(lab.root).items():
        assert not double_runs(instances), f"{vm} ran twice at once: {instances}"


@pytest.fixture
def armed_lab(tmp_path: Path) -> Iterator[LocalLab]:
    with armed_pool(tmp_path) as pool:
        yield pool


def test_a_pool_whose_sr_is_lost_for_good_is_moved_to_another(armed_lab: LocalLab) -> None:
    """The SR dies under an armed pool (rule 2), HA is disabled without it, and
    re-enabled on the spare: the master opens the database there from the hosts'
    backups; a master kill then fails over on the spare."""
    lab = armed_lab
    sr = lab.root / SR_FILE
    with sr.open("r+b") as volume:
        volume.truncate(0)  # every read of the SR now fails on every host
    sr.unlink()  # and it cannot be opened again
    wait_for(lambda: all(r.get("rule2") for r in lab.status()), 10 * T, "survival rule 2")
    out = ok(lab, "pool-ha-disable")
    assert "run pool-ha-disable again" in out, out  # nothing could be recorded
    wait_for(lambda: all(r.get("phase") == "HA_OFF" for r in lab.status()), 10 * T,
             "every host disarmed")

    code, _, err = hactl(lab, "pool-ha-enable", f"ha-config:timeout={T:g}")
    assert code != 0 and "could not open the pool database on heartbeat SR heartbeat-sr" in err
    code, _, err = hactl(lab, "pool-ha-enable", f"heartbeat-sr-uuids={SPARE_SR}",
                         f"ha-config:timeout={T:g}")
    assert code == 0, err
    assert "recording the disable that could not be recorded" in err, err
    assert statefile(lab) == SPARE_SR
    wait_for(lambda: master(lab) is not None and all(
        r.get("phase") == "NORMAL" for r in lab.status()), 10 * T, "HA on again, on the spare")

    boss = master(lab)
    assert boss is not None
    lab.kill(boss)
    wait_for(lambda: master(lab) not in (None, boss), 10 * T, "a new master")
    wait_for(lambda: running_elsewhere(lab, boss), 10 * T, "every protected VM on a survivor")
    for vm, instances in runs(lab.root).items():
        assert not double_runs(instances), f"{vm} ran twice at once: {instances}"
