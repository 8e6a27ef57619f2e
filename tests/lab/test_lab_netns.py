"""Named scenarios on a netns pool: real namespaces, nftables, a loop-device SR (root)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hacluster.lab.netns import NetnsLab
from hacluster.node.config import load

from ..conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.netns]  # netns: skipped without root
T = 3.0




@pytest.fixture
def pool(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NetnsLab]:
    lab = NetnsLab(tmp_path / "lab")
    lab.up(getattr(request, "param", 3), T)
    try:
        wait_for(lambda: sum(bool(r.get("master")) for r in lab.status()) == 1, 15 * T,
                 "a master")
        yield lab
    finally:
        lab.down()


def settled(lab: NetnsLab, survivors: list[int]) -> Callable[[], bool]:
    def check() -> bool:
        rows = lab.status()
        alive = [r["host"] for r in rows if r["phase"] == "NORMAL"]
        return alive == survivors and all(
            r.get("liveset") == survivors for r in rows if r["host"] in survivors
        ) and sum(bool(r.get("master")) for r in rows) == 1
    return check


def bound(lab: NetnsLab) -> float:
    timing = load(lab.host_dir(0) / "node.toml").timing
    return timing.T + timing.fence_window + 4 * max(timing.t1, timing.t2) + 2.0


@pytest.mark.parametrize("pool", [5], indirect=True)
def test_five_hosts_one_master(pool: NetnsLab) -> None:
    rows = pool.status()
    assert [r["liveset"] for r in rows] == [[0, 1, 2, 3, 4]] * 5
    assert sum(bool(r["master"]) for r in rows) == 1
    assert all(r["address"].startswith("10.77.") for r in rows)


@pytest.mark.parametrize("pool", [5], indirect=True)
def test_partition_3_2_keeps_the_larger_side(pool: NetnsLab) -> None:
    pool.partition([[0, 1], [2, 3, 4]])
    took = wait_for(settled(pool, [2, 3, 4]), 15 * T, "the 3 side to commit")
    assert took <= bound(pool)
    fenced = {e["host"] for e in pool.events() if e["event"] == "fence"}
    assert fenced == {0, 1}


def test_one_way_link(pool: NetnsLab) -> None:
    pool.drop_from(2, 0)  # host 0 stops hearing host 2
    wait_for(settled(pool, [0, 1]), 15 * T, "host 2 to be removed")
    assert {e["host"] for e in pool.events() if e["event"] == "fence"} == {2}


def test_isolated_host_fences_itself(pool: NetnsLab) -> None:
    pool.partition([[1], [0, 2]])
    took = wait_for(settled(pool, [0, 2]), 15 * T, "host 1 to be removed")
    assert took <= bound(pool)
    fences = [e for e in pool.events() if e["event"] == "fence"]
    assert [e["host"] for e in fences] == [1]
    # Host 1 either reaches its own verdict or first reads a survivor's fence
    # request on the SR: both are the designed outcome, whichever lands first.
    reason = fences[0]["reason"]
    assert "partition" in reason or reason in {
        "fence request from host 0", "fence request from host 2"}, reason


@pytest.mark.parametrize("pool", [2], indirect=True)
def test_two_host_split_keeps_host_0(pool: NetnsLab) -> None:
    pool.partition([[0], [1]])
    wait_for(settled(pool, [0]), 15 * T, "host 1 to fence")


def test_master_kill_and_reelection(pool: NetnsLab) -> None:
    old = next(r["host"] for r in pool.status() if r["master"])
    pool.kill(old)
    rest = [h for h in range(3) if h != old]
    took = wait_for(settled(pool, rest), 15 * T, "a new master")
    assert took <= bound(pool)


def test_pause_longer_than_t_is_fenced_by_the_watchdog(pool: NetnsLab) -> None:
    timing = load(pool.host_dir(2) / "node.toml").timing
    pool.pause(2, timing.lease + 1.0)
    wait_for(settled(pool, [0, 1]), 15 * T, "host 2 to be removed")
    fired = [e for e in pool.events() if e["event"] == "watchdog" and e["host"] == 2]
    commits = [e["time"] for e in pool.events()
               if e["event"] == "commit" and e.get("removed") == [2]]
    assert fired and commits and fired[0]["time"] < min(commits)


@pytest.mark.parametrize("mode", ["error", "hang"])
def test_host_losing_its_storage_fences_and_exits(pool: NetnsLab, mode: str) -> None:
    pool.storage(2, mode)
    took = wait_for(settled(pool, [0, 1]), 15 * T, "host 2 to be removed")
    assert took <= bound(pool) + T
    assert [e["host"] for e in pool.events() if e["event"] == "fence"] == [2]
    if mode == "error":
        wait_for(lambda: not pool.running(2), 5.0, "the fenced daemon to exit")
    # with a hung volume the daemon has stopped (status DOWN above) but its
    # I/O thread stays in the kernel until the volume answers, as on real hosts


def test_statefile_lost_everywhere_enters_rule_2(pool: NetnsLab) -> None:
    for host in range(3):
        pool.storage(host, "error")

    def rule2() -> bool:
        rows = pool.status()
        return all(r.get("rule2") for r in rows) and not any(r.get("master") for r in rows)

    wait_for(rule2, 15 * T, "survival rule 2 on every host")
    assert all(r["liveset"] == [0, 1, 2] for r in pool.status())
    pool.kill(1)  # any further failure fences everyone
    wait_for(lambda: all(r["phase"] == "DOWN" for r in pool.status()), 15 * T,
             "every host to fence")


def test_pool_ha_disable_without_the_statefile_disarms_every_host_with_no_fence(
        pool: NetnsLab) -> None:
    from hacluster.chaos.runner import vm_running
    from hacluster.lab.workloads import VM_SR

    from .test_mgmt_lab import hactl

    for host in range(3):
        pool.storage(host, "error")
    wait_for(lambda: all(r.get("rule2") for r in pool.status()), 15 * T,
             "survival rule 2 on every host")
    asked = time.time()
    code, out, err = hactl(pool, "pool-ha-disable")
    assert code == 0 and "disarmed on every host without the heartbeat SR" in out, err
    wait_for(lambda: all(r.get("phase") == "HA_OFF" for r in pool.status()), 15 * T,
             "every host disarmed")
    time.sleep(T)  # long enough for a wrong fence to show
    assert all(pool.running(h) for h in range(3))
    assert not [e for e in pool.events() if e["event"] in ("fence", "watchdog")
                and e["time"] >= asked]
    now = time.time()
    disks = sorted((pool.root / VM_SR).glob("*.disk"))
    assert disks and all(vm_running(d, now) for d in disks)  # VMs keep running


def test_fenced_host_rejoins_after_restart(pool: NetnsLab) -> None:
    pool.partition([[2], [0, 1]])
    wait_for(settled(pool, [0, 1]), 15 * T, "host 2 to fence")
    pool.heal()
    wait_for(lambda: not pool.running(2), 15 * T, "the fenced daemon to exit")
    pool.restart(2)
    wait_for(settled(pool, [0, 1, 2]), 15 * T, "host 2 to rejoin")
    joins = [e for e in pool.events() if e["event"] == "commit" and e.get("added") == [2]]
    assert {e["host"] for e in joins} == {0, 1, 2}


def test_rule_2_is_mailed_at_once_and_stored_once_a_master_is_back(pool: NetnsLab) -> None:
    from aiosmtpd.controller import Controller

    from ..mgmt.test_mail import Collector
    from .test_mgmt_lab import hactl, ok

    collector = Collector()
    bridge = f"10.77.{pool.lab_id}.254"
    smtp = Controller(collector, hostname=bridge, port=2525)
    smtp.start()
    try:
        ok(pool, "pool-param-set", "other-config:mail-destination=ops@example.org",
           f"other-config:ssmtp-mailhub={bridge}:2525", "other-config:mail-starttls=off")
        for host in range(3):
            pool.storage(host, "error")
        wait_for(lambda: all(r.get("rule2") for r in pool.status()), 15 * T,
                 "survival rule 2 on every host")
        wait_for(lambda: len(collector.envelopes) == 3, 10, "a mail from every host")
        subjects = {m["Subject"] for _, _, m in collector.delivered()}
        assert all("ha_survival_rule_2" in s for s in subjects), subjects
        for host in range(3):
            pool.storage(host, "ok")
        wait_for(lambda: sum(bool(r.get("master")) for r in pool.status()) == 1, 15 * T,
                 "a master once the statefile is back")
        wait_for(lambda: hactl(pool, "message-list", "name=ha_survival_rule_2")[1].count(
            "ha_survival_rule_2") == 3, 15, "the three alerts stored")
    finally:
        smtp.stop()


def test_the_arp_table_limits_are_raised_to_fit_and_never_lowered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One ARP table serves every namespace: 64 hosts need 64·64 entries and more."""
    from hacluster.lab import netns

    limits = [tmp_path / f"gc_thresh{n}" for n in (1, 2, 3)]
    for limit, value in zip(limits, (128, 512, 100000), strict=True):
        limit.write_text(f"{value}\n")
    monkeypatch.setattr(netns, "NEIGHBOUR_LIMITS", [str(p) for p in limits])
    netns._room_for_neighbours(64)
    need = 64 * 64 + 1024
    assert [int(p.read_text()) for p in limits] == [need, 2 * need, 100000]


@pytest.mark.parametrize("pool", [40], indirect=True)
def test_forty_hosts_all_hear_each_other_and_settle(pool: NetnsLab) -> None:
    """Past 32 namespaces the machine's default ARP table overflowed and hosts
    stopped hearing each other; the lab starts 40 in waves, HA enable waits for
    the last, and the pool settles whole with nobody fenced."""
    everyone = list(range(40))
    wait_for(settled(pool, everyone), 60 + 10 * T, "all 40 hosts NORMAL in one liveset",
             lambda: pool.status())
    fences = [e for e in pool.events() if e["event"] == "fence"]
    assert fences == []
