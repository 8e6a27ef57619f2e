"""The product document's emergency procedures, end to end on a netns pool (root).

1. A host that can reach neither its peers nor the heartbeat SR fences; rebooted,
   it cannot rejoin. ``host-emergency-ha-disable --force`` on it disarms HA,
   ``pool-emergency-reset-master`` points it at the master, and once it is
   healed HA is re-enabled with every host.
2. With HA off and the master gone for good, ``pool-emergency-transition-to-master``
   makes another host the master with the pool database intact; the old master,
   back, follows it, and HA is enabled again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.lab.netns import NetnsLab

from ..conftest import wait_for
from .test_mgmt_lab import T, hactl, master, ok

pytestmark = [pytest.mark.slow, pytest.mark.netns]  # netns: skipped without root


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    pool = NetnsLab(tmp_path / "lab")
    pool.up(3, T, ha_off=True)
    try:
        wait_for(lambda: all(r.get("phase") == "HA_OFF" for r in pool.status()), 10,
                 "every host up with HA off")
        ok(pool, "pool-ha-enable", "ha-config:timeout=3")
        wait_for(lambda: master(pool) is not None, 15 * T, "a master")
        yield pool
    finally:
        pool.down()


def on(lab: NetnsLab, host: int, *words: str) -> tuple[int, str, str]:
    """hactl sent to one host only (``-s``), as an operator at that host's console."""
    return hactl(lab, "-s", f"{lab.ip(host)}:{17000 + 2000}", *words)


def phases(lab: NetnsLab) -> list[str]:
    return [str(r.get("phase")) for r in lab.status()]


def test_unreachable_host_is_recovered_with_the_emergency_procedure(lab: NetnsLab) -> None:
    ok(lab, "vm-param-set", "uuid=vm-batch", "order=4")
    lab.partition([[0, 1], [2]])
    lab.storage(2, "error")
    wait_for(lambda: phases(lab)[2] == "DOWN", 15 * T, "host 2 to fence")
    wait_for(lambda: not lab.running(2), 10, "the fenced daemon to exit")
    lab.restart(2)  # it reboots, still cut off: it cannot rejoin
    wait_for(lambda: phases(lab)[2] not in ("DOWN", "NORMAL"), 10, "host 2 to come back")
    code, _, err = on(lab, 2, "pool-emergency-reset-master", f"master-address={lab.ip(0)}")
    assert code == 1 and "refused while HA is armed" in err
    code, out, err = on(lab, 2, "host-emergency-ha-disable", "--force")
    assert code == 0, err
    wait_for(lambda: phases(lab)[2] == "HA_OFF", 10, "host 2 with HA off")
    boss = master(lab)
    assert boss in (0, 1)
    code, out, err = on(lab, 2, "pool-emergency-reset-master", f"master-address={lab.ip(boss)}")
    assert code == 0 and f"host {boss}" in out, err
    lab.heal()
    lab.storage(2, "ok")
    assert ok(lab, "vm-param-get", "uuid=vm-batch", "param-name=order") == "4"
    code, _, err = on(lab, 2, "vm-param-get", "uuid=vm-batch", "param-name=order")
    assert code == 0, err  # relayed from host 2 to the master
    code, _, err = hactl(lab, "pool-ha-enable")
    assert code == 1 and "already enabled" in err
    ok(lab, "pool-ha-disable")
    wait_for(lambda: phases(lab) == ["HA_OFF"] * 3, 10, "HA off everywhere")
    ok(lab, "pool-ha-enable", "ha-config:timeout=3")
    wait_for(lambda: phases(lab) == ["NORMAL"] * 3 and master(lab) is not None, 15 * T,
             "all three hosts armed again")
    assert ok(lab, "vm-param-get", "uuid=vm-batch", "param-name=order") == "4"


def test_transition_to_master_when_the_master_is_gone(lab: NetnsLab) -> None:
    ok(lab, "vm-param-set", "uuid=vm-sql", "start-delay=7")
    ok(lab, "pool-ha-disable")
    wait_for(lambda: phases(lab) == ["HA_OFF"] * 3, 10, "HA off everywhere")
    old = int(ok(lab, "pool-param-get", "param-name=master").rpartition("-")[2])
    lab.kill(old)
    survivor = (old + 1) % 3
    code, _, err = on(lab, survivor, "pool-list")
    assert code == 1 and "pool-emergency-transition-to-master" in err, err
    code, out, err = on(lab, survivor, "pool-emergency-transition-to-master")
    assert code == 0 and "now the master" in out, err
    assert ok(lab, "pool-param-get", "param-name=master") == f"host-{survivor:04}"
    assert ok(lab, "vm-param-get", "uuid=vm-sql", "param-name=start-delay") == "7"
    code, _, err = hactl(lab, "pool-ha-enable")
    assert code == 1 and "every host must be live" in err
    lab.restart(old)
    wait_for(lambda: phases(lab)[old] == "HA_OFF", 10, "the old master back, HA off")
    assert ok(lab, "pool-param-get", "param-name=master") == f"host-{survivor:04}"
    ok(lab, "pool-ha-enable", "ha-config:timeout=3")
    wait_for(lambda: phases(lab) == ["NORMAL"] * 3 and master(lab) is not None, 15 * T,
             "all three hosts armed again")
    assert ok(lab, "vm-param-get", "uuid=vm-sql", "param-name=start-delay") == "7"
