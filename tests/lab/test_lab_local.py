"""Real node processes on the local lab backend (no root): failover, watchdog, bad input."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.core.messages import Phase, Report
from hacluster.lab.local import LabError, LocalLab
from hacluster.node.config import load
from hacluster.node.daemon import query_status
from hacluster.storage.sr import BlockDevice, GlobalBlock
from hacluster.wire.codec import Sealer, new_pool_key

from ..conftest import lab_base_port, wait_for

pytestmark = pytest.mark.slow  # real pools of node daemons
T = 3.0


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LocalLab]:
    pool = LocalLab(tmp_path / "lab")
    pool.up(3, T, base_port=lab_base_port())
    try:
        wait_for(lambda: sum(bool(r.get("master")) for r in pool.status()) == 1, 15 * T,
                 "a master")
        yield pool
    finally:
        pool.down()


def masters(lab: LocalLab) -> list[int]:
    return [r["host"] for r in lab.status() if r.get("master")]


def test_master_crash_fails_over_to_a_new_master(lab: LocalLab) -> None:
    old = masters(lab)[0]
    survivors = [h for h in range(3) if h != old]
    killed = time.monotonic()
    lab.kill(old)
    wait_for(lambda: len(masters(lab)) == 1 and masters(lab)[0] != old
             and all(r.get("liveset") == survivors for r in lab.status() if r["host"] != old),
             15 * T, "failover")
    took = time.monotonic() - killed
    timing = load(lab.host_dir(survivors[0]) / "node.toml").timing
    assert took <= timing.T + timing.fence_window + 4 * timing.t1 + 2.0
    events = list(lab.events())
    assert any(e["event"] == "commit" and e.get("removed") == [old] for e in events)


def test_pause_longer_than_t_is_fenced_by_the_watchdog(lab: LocalLab) -> None:
    victim = 2
    timing = load(lab.host_dir(victim) / "node.toml").timing
    lab.pause(victim, timing.lease + 1.0)  # SIGSTOP; the watchdog process keeps counting
    wait_for(lambda: not lab.running(victim), 5.0, "the paused daemon to be killed")
    fired = [e for e in lab.events() if e["event"] == "watchdog" and e["host"] == victim]
    assert fired, "the watchdog did not record the firing"
    wait_for(lambda: all(r.get("liveset") == [0, 1] for r in lab.status() if r["host"] != 2),
             15 * T, "the survivors to commit")
    commit = min(e["time"] for e in lab.events()
                 if e["event"] == "commit" and e.get("removed") == [victim])
    assert fired[0]["time"] < commit


def test_killed_host_rejoins_after_restart(lab: LocalLab) -> None:
    lab.kill(1)
    wait_for(lambda: all(r.get("liveset") == [0, 2] for r in lab.status() if r["host"] != 1),
             15 * T, "removal")
    lab.restart(1)
    wait_for(lambda: all(r.get("liveset") == [0, 1, 2] for r in lab.status()), 15 * T,
             "rejoin")


def test_a_host_frozen_whole_rejoins_after_restart(lab: LocalLab) -> None:
    """Daemon, watchdog and VMs all frozen (a frozen container): when they wake,
    the old daemon's last reports reach the survivors after its removal, and
    must not keep the host's next boot from counting."""
    victim = 1
    group = lab.pid(victim)
    os.killpg(group, signal.SIGSTOP)
    try:
        wait_for(lambda: all(r.get("liveset") == [0, 2] for r in lab.status()
                             if r["host"] != victim), 15 * T, "removal")
        time.sleep(T)  # long after the removal, as a frozen container would be
    finally:
        os.killpg(group, signal.SIGCONT)
    wait_for(lambda: not lab.running(victim), 15 * T, "the woken daemon to fence")
    lab.restart(victim)
    wait_for(lambda: all(r.get("liveset") == [0, 1, 2] for r in lab.status()), 15 * T,
             "rejoin")


def test_bad_packets_are_dropped_and_counted(lab: LocalLab) -> None:
    config = load(lab.host_dir(0) / "node.toml")
    target = (config.address.host, config.address.port)
    everyone = frozenset({0, 1, 2})
    forged = Sealer.for_heartbeats(new_pool_key(), config.capacity).seal(Report(
        generation=1, sender=1, boot=1, seq=1, phase=Phase.PROPOSED, liveset=everyone,
        hbdomain=everyone, sfdomain=everyone, statefile_access=True,
        proposal=frozenset({1})))  # a forged fence request against host 0
    genuine = Sealer.for_heartbeats(config.key, config.capacity)
    wrong_generation = genuine.seal(Report(
        generation=12345, sender=1, boot=1, seq=1, phase=Phase.NORMAL, liveset=everyone,
        hbdomain=everyone, sfdomain=everyone, statefile_access=True))
    device = BlockDevice(config.sr)
    try:
        generation = GlobalBlock.decode(device.read(0), config.key).generation
    finally:
        device.close()
    replayed = genuine.seal(Report(  # an old incarnation's packet, sent again
        generation=generation, sender=1, boot=1, seq=1, phase=Phase.PROPOSED,
        liveset=everyone, hbdomain=everyone, sfdomain=everyone, statefile_access=True,
        proposal=frozenset({1})))
    peer = load(lab.host_dir(1) / "node.toml").address.host  # spoofed: host 1's address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind((peer, 0))
        for packet in (forged, b"garbage", b"\0" * 60_000, forged[:20], wrong_generation,
                       replayed):
            sender.sendto(packet, target)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.99", 0))  # no host of the pool: dropped unopened
        for _ in range(1000):
            stranger.sendto(wrong_generation, target)

    def counted() -> bool:
        dropped = lab.status()[0]["dropped"]
        return bool(dropped["bad_packets"] >= 4 and dropped["wrong_generation"] == 1
                    and dropped["stale"] >= 1 and dropped["strangers"] >= 100)

    wait_for(counted, 5.0, "drops to be counted")
    row = lab.status()[0]
    assert row["phase"] == "NORMAL" and row["liveset"] == [0, 1, 2]
    assert lab.running(0)


def test_lab_refuses_bad_requests(lab: LocalLab, tmp_path: Path) -> None:
    with pytest.raises(LabError, match="no host 7"):
        lab.kill(7)
    with pytest.raises(LabError, match="already exists"):
        lab.up(3, T)
    with pytest.raises(LabError, match="network namespaces"):
        lab.network_fault("partition")
    with pytest.raises(LabError, match="run 'hacluster lab up' first"):
        LocalLab(tmp_path / "nothing").status()
    with pytest.raises(LabError, match="is running"):
        lab.restart(0)


def test_two_heartbeat_networks_ipv4_and_ipv6(tmp_path: Path) -> None:
    pool = LocalLab(tmp_path / "dual")
    pool.up(3, T, base_port=lab_base_port(), networks=2)
    try:
        wait_for(lambda: sum(bool(r.get("master")) for r in pool.status()) == 1, 15 * T,
                 "a master")
        rows = pool.status()
        assert all(r["networks"][1].startswith("[::1]:") for r in rows)
        wait_for(lambda: all(min(r["received_per_network"]) > 10 for r in pool.status()),
                 5 * T, "beats on both networks")
        old = masters(pool)[0]
        pool.kill(old)
        rest = [h for h in range(3) if h != old]
        wait_for(lambda: all(r.get("liveset") == rest for r in pool.status() if r["host"] != old)
                 and len(masters(pool)) == 1, 15 * T, "failover")
    finally:
        pool.down()


def test_clustered_mode_fails_over_on_quorum(tmp_path: Path) -> None:
    pool = LocalLab(tmp_path / "clustered")
    pool.up(3, T, base_port=lab_base_port(), mode="clustered")
    try:
        wait_for(lambda: sum(bool(r.get("master")) for r in pool.status()) == 1, 15 * T,
                 "a master")
        assert all(r["sfdomain"] == [] for r in pool.status())  # network only
        old = masters(pool)[0]
        pool.kill(old)
        rest = [h for h in range(3) if h != old]
        wait_for(lambda: all(r.get("liveset") == rest for r in pool.status() if r["host"] != old)
                 and len(masters(pool)) == 1, 15 * T, "failover")
        pool.kill(rest[0])  # one of three left: no quorum, it fences
        wait_for(lambda: not pool.running(rest[1]), 15 * T, "the minority to fence")
        reasons = [e["reason"] for e in pool.events()
                   if e["event"] == "fence" and e["host"] == rest[1]]
        # its decision (no quorum), or its lease first: no quorum vouches for it
        assert reasons and ("quorum" in reasons[0] or "lease running out" in reasons[0])
    finally:
        pool.down()



def test_a_node_closing_without_a_status_reads_as_not_answering(tmp_path: Path) -> None:
    """A node killed while it accepts a status connection closes it empty: that
    must read as a node that does not answer (an OSError, shown DOWN), not crash."""
    path = tmp_path / "status.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        closer = threading.Thread(target=lambda: server.accept()[0].close())
        closer.start()
        with pytest.raises(ConnectionError, match="closed without a status"):
            query_status(path)
        closer.join()


@pytest.mark.slow
def test_lab_up_fails_fast_naming_a_host_that_cannot_start(tmp_path: Path) -> None:
    base = lab_base_port()
    with socket.socket() as taken:  # host 1's management port, held by someone else
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.2", base + 2000))
        taken.listen()
        lab = LocalLab(tmp_path / "lab")
        started = time.monotonic()
        with pytest.raises(LabError, match=rf"host 1 could not start: .*cannot listen on "
                                           rf"127\.0\.0\.2:{base + 2000}"):
            lab.up(3, 3.0, base_port=base)
        assert time.monotonic() - started < 30
    assert not (tmp_path / "lab" / "lab.json").exists()  # nothing left to block a retry
    assert not any(lab.running(i) for i in range(3))
