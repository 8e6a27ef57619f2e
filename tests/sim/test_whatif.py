"""What-if: the simulator on a pool's own hosts, VMs, placement and timing (issue #15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hacluster.core.node import Mode
from hacluster.lab.workloads import default_pool
from hacluster.model import poolfile
from hacluster.sim.whatif import WhatIfError, predict

POOL = default_pool(3).pool  # host0: dhcp (order 0, 2 s delay), sql, batch, scratch


def test_the_masters_crash_is_predicted_as_the_demo_shows_it() -> None:
    result = predict(POOL, 3.0, Mode.STATEFILE, ["host0"])
    assert (result["master_before"], result["master_after"]) == (["host0"], ["host1"])
    assert result["fenced"] == [] and result["checker"] == []
    vms = {vm["vm"]: vm for vm in result["vms"]}
    assert set(vms) == {"dhcp", "sql", "batch", "scratch"}
    assert vms["dhcp"]["at"] <= 1.2 * 3 + 1  # the issue #14 bound, order delay aside
    assert vms["sql"]["at"] >= vms["dhcp"]["at"] + 2.0  # dhcp's start delay comes first
    assert vms["batch"]["at"] >= vms["sql"]["at"]  # best effort after the protected
    assert vms["scratch"].get("down") is True  # unprotected: stays down
    assert result["events"][0]["text"].startswith("liveset committed")


def test_a_partition_fences_the_minority() -> None:
    result = predict(POOL, 3.0, Mode.STATEFILE, [], [["host0"], ["host1", "host2"]])
    assert result["fenced"] == ["host0"]
    assert result["master_after"] in (["host1"], ["host2"])
    assert any("fences itself" in e["text"] for e in result["events"])
    assert all("runs_on" in vm or vm["priority"] == "none" for vm in result["vms"])


def test_the_same_seed_gives_the_same_prediction() -> None:
    assert predict(POOL, 5.0, Mode.CLUSTERED, ["host2"], seed=7) == \
        predict(POOL, 5.0, Mode.CLUSTERED, ["host2"], seed=7)


@pytest.mark.parametrize(("fail", "partition", "message"), [
    (["host9"], [], "no host 'host9'"),
    ([], [], "give a fault"),
    ([], [["host0"], ["nobody"]], "no host 'nobody'"),
])
def test_bad_faults_are_named(fail: list[str], partition: list[list[str]],
                              message: str) -> None:
    with pytest.raises(WhatIfError, match=message):
        predict(POOL, 3.0, Mode.STATEFILE, fail, partition)


def test_the_offline_command(tmp_path: Path) -> None:
    pool = tmp_path / "pool.toml"
    pool.write_text(poolfile.dump(default_pool(3)))
    done = subprocess.run([sys.executable, "-m", "hacluster", "simulate", "--pool", str(pool),
                           "--fail", "host1", "--timeout", "3"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "web1" in done.stdout and "runs on host0" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "hacluster", "simulate", "--pool", str(pool),
                          "--fail", "host7"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no host 'host7'" in bad.stderr
