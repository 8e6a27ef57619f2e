"""Growing and shrinking a real pool: lab join, lab eject, a rejoin on the freed index."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacluster.lab import members
from hacluster.lab.local import LabError, LocalLab
from hacluster.lab.netns import NetnsLab
from hacluster.node.daemon import NOT_A_MEMBER_EXIT

from ..conftest import lab_base_port, wait_for

pytestmark = pytest.mark.slow  # real pools of node daemons
T = 3.0
PROTECTED = {"vm-dhcp", "vm-sql", "vm-web1", "vm-web2"}  # the lab's restart-priority VMs


@pytest.fixture(params=["local", pytest.param("netns", marks=pytest.mark.netns)])
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalLab]:
    pool = NetnsLab(tmp_path / "lab") if request.param == "netns" else LocalLab(tmp_path / "lab")
    pool.up(3, T, base_port=lab_base_port())
    try:
        wait_for(lambda: settled(pool, [0, 1, 2]), 15 * T, "a settled pool")
        yield pool
    finally:
        pool.down()


def settled(lab: LocalLab, hosts: list[int]) -> bool:
    rows = {r["host"]: r for r in lab.status()}
    return (all(rows[h].get("phase") == "NORMAL" and rows[h].get("liveset") == hosts
                for h in hosts)
            and sum(bool(rows[h].get("master")) for h in hosts) == 1)


def evidence(lab: LocalLab) -> str:
    """Every host's status and the pool's last events, for a failure's message."""
    events = list(lab.events())[-40:]
    return "\n".join([*(str(row) for row in lab.status()), "last events:",
                      *(str(e)[:400] for e in events)])


def protected_running(lab: LocalLab) -> dict[str, int]:
    """Where each VM runs now, as each host's daemon reports it."""
    return {vm: r["host"] for r in lab.status() for vm in r.get("vms", [])}


def test_a_host_joins_is_ejected_and_a_new_host_takes_its_index(lab: LocalLab) -> None:
    assert members.join(lab) == 3
    wait_for(lambda: settled(lab, [0, 1, 2, 3]), 15 * T, "4 hosts in every liveset")
    before = protected_running(lab)

    members.eject(lab, 1)
    wait_for(lambda: settled(lab, [0, 2, 3]), 15 * T, "3 hosts after the eject")
    assert not lab.running(1)
    moved = protected_running(lab)
    assert set(moved) == set(before), "every VM that ran still runs"
    assert 1 not in moved.values(), "none on the ejected host"
    events = list(lab.events())
    assert any(e["event"] == "commit" and e.get("removed") == [1] and e.get("left") == [1]
               for e in events), "the ejected host left cleanly (no fence window)"
    assert not any(e["event"] == "fence" for e in events)

    if not isinstance(lab, NetnsLab):  # there, the ejected host's namespace is gone too
        again = subprocess.run([sys.executable, "-m", "hacluster", "node", "--config",
                                str(lab.host_dir(1) / "node.toml")], capture_output=True,
                               text=True, timeout=60, check=False)
        assert again.returncode == NOT_A_MEMBER_EXIT
        assert "is not a member of the pool" in again.stderr

    with pytest.raises(LabError, match="not a member"):
        members.eject(lab, 1)
    assert members.join(lab) == 1  # the freed index, a new host
    wait_for(lambda: settled(lab, [0, 1, 2, 3]), 15 * T, "the new host 1 in every liveset")


def test_a_grown_pool_cold_starts_with_its_joined_hosts(lab: LocalLab) -> None:
    """After a join, a power cut and a restart of every host: the pool re-forms with
    the joined host and runs every protected VM again (the master reaches the joined
    host's agent: its roster comes from the SR's member table, not node.toml). The
    power cut comes right after the join, while a member's last slot may still
    ack the joined host: that dead slot must not admit its next boot (it did, and
    the pool fenced down to one host, in 2 runs of 10 under load)."""
    assert members.join(lab) == 3
    wait_for(lambda: settled(lab, [0, 1, 2, 3]), 15 * T, "4 hosts in every liveset")
    assert lab.kill_all() == [0, 1, 2, 3]
    lab.restart_all()
    wait_for(lambda: settled(lab, [0, 1, 2, 3]) and set(protected_running(lab)) >= PROTECTED,
             30 * T, "the pool re-formed with every protected VM", lambda: evidence(lab))
    assert not [e for e in lab.events() if e["event"] in ("task-failed", "fence")]
