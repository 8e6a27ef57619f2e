"""``hactl pool-key-rotate`` on a live local lab pool (T = 3 s, 3 hosts, HA on).

The rotation fences nothing and loses no heartbeat: no host leaves NORMAL, no
fence or removal is logged, no heartbeat fails to open; afterwards every
host's ``pool.key`` holds the same new key (0600), a heartbeat sealed with the
old key is a bad packet, the pool database still answers and a master kill
fails over under the new key. A host down during the rotation keeps the old
key and rejoins once the operator copies the new ``pool.key`` to it.
"""

from __future__ import annotations

import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.core.messages import Phase, Report
from hacluster.lab.local import LocalLab
from hacluster.node.config import load, read_key
from hacluster.wire.codec import Sealer

from ..conftest import lab_base_port, wait_for
from .test_mgmt_lab import hactl, master, ok

T = 3.0
pytestmark = pytest.mark.slow  # real pools of node daemons


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LocalLab]:
    pool = LocalLab(tmp_path / "lab")
    pool.up(3, T, base_port=lab_base_port(), ha_off=True)
    try:
        wait_for(lambda: all(r.get("phase") == "HA_OFF" for r in pool.status()), 10,
                 "every host up with HA off")
        ok(pool, "pool-ha-enable", "ha-config:timeout=3")
        wait_for(lambda: master(pool) is not None and all(
            r.get("phase") == "NORMAL" for r in pool.status()), 15 * T, "a master, all NORMAL")
        yield pool
    finally:
        pool.down()


def keys(lab: LocalLab, hosts: range | list[int]) -> list[bytes]:
    return [read_key(lab.host_dir(i) / "pool.key") for i in hosts]


class Watch:
    """Every host's phase polled from another thread while a rotation runs."""

    def __init__(self, lab: LocalLab, hosts: list[int]) -> None:
        self.lab, self.hosts = lab, hosts
        self.seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self.seen |= {str(r.get("phase")) for r in self.lab.status()
                          if r["host"] in self.hosts}

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def disturbances(lab: LocalLab, since: float) -> list[dict[str, object]]:
    """Fences, removals and phase changes away from NORMAL logged after ``since``."""
    return [e for e in lab.events() if float(str(e["time"])) >= since and (
        e["event"] in ("fence", "watchdog")
        or (e["event"] == "commit" and e.get("removed"))
        or (e["event"] == "phase" and e.get("new") != "NORMAL"))]


def beat(lab: LocalLab, key: bytes, to: int) -> None:
    """A heartbeat of host 1 sealed with ``key``, sent to host ``to``."""
    config = load(lab.host_dir(to) / "node.toml")
    everyone = frozenset({0, 1, 2})
    packet = Sealer.for_heartbeats(key, config.capacity).seal(Report(
        generation=1, sender=1, boot=1, seq=1, phase=Phase.NORMAL, liveset=everyone,
        hbdomain=everyone, sfdomain=everyone, statefile_access=True))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind((load(lab.host_dir(1) / "node.toml").address.host, 0))  # as host 1
        sender.sendto(packet, (config.address.host, config.address.port))


def bad_packets(lab: LocalLab) -> list[int]:
    return [int(r["dropped"]["bad_packets"]) for r in lab.status()]


def test_rotation_on_a_live_pool_fences_nothing(lab: LocalLab) -> None:
    old = keys(lab, range(3))[0]
    assert bad_packets(lab) == [0, 0, 0]
    started = time.time()
    with Watch(lab, [0, 1, 2]) as watch:
        code, out, err = hactl(lab, "pool-key-rotate")
        assert code == 0, err
        time.sleep(T)  # and a timeout after the retire
    assert "pool key rotated on 3 host(s)" in out and "NOT on" not in out
    assert "accept:" in err and "switch:" in err and "retire:" in err
    assert watch.seen == {"NORMAL"}
    assert disturbances(lab, started) == []
    assert bad_packets(lab) == [0, 0, 0]  # no heartbeat failed to open, in any step

    new = keys(lab, range(3))
    assert new[0] != old and new == [new[0]] * 3
    for i in range(3):
        assert stat.S_IMODE((lab.host_dir(i) / "pool.key").stat().st_mode) == 0o600
        assert sorted(p.name for p in lab.host_dir(i).glob("pool.key*")) == ["pool.key"]

    beat(lab, old, to=0)
    wait_for(lambda: bad_packets(lab)[0] == 1, 5, "the old key's heartbeat to be refused")
    beat(lab, new[0], to=0)  # the new key's opens (a stale report, not a bad packet)
    time.sleep(0.5)
    assert bad_packets(lab)[0] == 1
    assert ok(lab, "pool-param-get", "param-name=ha-enabled") == "true"
    ok(lab, "pool-param-set", "other-config:rotated=yes")

    first = master(lab)
    assert first is not None
    lab.kill(first)
    survivors = [h for h in range(3) if h != first]
    wait_for(lambda: master(lab) not in (None, first) and all(
        r.get("liveset") == survivors for r in lab.status() if r["host"] != first),
        15 * T, "failover after the rotation")
    wait_for(lambda: hactl(lab, "pool-param-get", "param-name=other-config",
                           "param-key=rotated")[1] == "yes", 10 * T,
             "the new master to load the database under the new key")
    assert not [e for e in lab.events() if e["event"] == "fence"]


def test_a_host_down_keeps_the_old_key_until_the_operator_copies_the_new_one(
        lab: LocalLab) -> None:
    old = keys(lab, [2])[0]
    down = 2 if master(lab) != 2 else 1
    lab.kill(down)
    live = [h for h in range(3) if h != down]
    wait_for(lambda: all(r.get("liveset") == live for r in lab.status() if r["host"] != down),
             15 * T, "the killed host's removal")
    code, out, err = hactl(lab, "pool-key-rotate")
    assert code == 0, err
    assert "pool key rotated on 2 host(s)" in out and "NOT on" in out
    assert "cannot rejoin until the new pool.key is copied" in out
    new = keys(lab, live)
    assert new[0] != old and new[0] == new[1] and keys(lab, [down]) == [old]

    lab.restart(down)  # the old key only: it cannot join
    time.sleep(3 * T)
    assert all(r.get("liveset") == live for r in lab.status() if r["host"] != down)
    lab.kill(down)
    wait_for(lambda: not lab.running(down), 10, "the old-key host to end")
    (lab.host_dir(down) / "pool.key").write_bytes(
        (lab.host_dir(live[0]) / "pool.key").read_bytes())
    lab.restart(down)
    wait_for(lambda: all(r.get("liveset") == [0, 1, 2] for r in lab.status()), 15 * T,
             "the host given the new key to rejoin")
    assert ok(lab, "pool-param-get", "param-name=ha-enabled") == "true"
