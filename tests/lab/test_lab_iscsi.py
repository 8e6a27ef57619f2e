"""A pool on a real iSCSI LUN (``lab up --sr iscsi``): tgt's target, one initiator per host.

Rules: nothing is mocked (tgtd, QEMU's libiscsi initiator, nbdfuse, real node
daemons). Without root or the programs the tests skip with the reason, except
under CI (``CI`` set), where they fail: ``.ci/run`` installs the programs.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hacluster.lab import iscsi
from hacluster.lab.local import LabError, LocalLab
from hacluster.lab.netns import NetnsLab
from hacluster.node.config import load
from hacluster.storage.sr import BLOCK, BlockDevice, GlobalBlock, slot_offset
from hacluster.wire.codec import new_pool_key

from ..conftest import lab_base_port, load_tool, wait_for
from .test_lab_local import masters

T = 3.0


def need_iscsi() -> None:
    lacking = iscsi.missing()
    if lacking:
        reason = "the iSCSI chain needs " + ", ".join(lacking)
        if os.environ.get("CI"):
            pytest.fail(reason + " (.ci/run installs them)")
        pytest.skip(reason)


@pytest.mark.slow  # root is checked by need_iscsi (no netns marker: no nftables needed)
def test_a_pool_on_an_iscsi_lun_fails_over(tmp_path: Path) -> None:
    need_iscsi()
    lab = LocalLab(tmp_path / "lab")
    lab.up(3, T, base_port=lab_base_port(), sr="iscsi")
    state = lab.load()["iscsi"]
    try:
        wait_for(lambda: len(masters(lab)) == 1, 15 * T, "a master")
        _fails_over_on_the_lun(lab, iscsi.Target.from_dict(state["target"]))
    finally:
        lab.down()
    assert not any(os.path.ismount(lab.host_dir(i) / iscsi.MOUNT) for i in range(3))
    assert not (iscsi.CONTROL_DIR / f"socket.{state['target']['control']}").exists()
    for pid in [state["target"]["pid"], *state["initiators"].values()]:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived lab down"


def _fails_over_on_the_lun(lab: LocalLab, target: iscsi.Target) -> None:
    # every host opens its own initiator's view of the LUN, with O_DIRECT
    paths = {load(lab.host_dir(i) / "node.toml").sr.resolve() for i in range(3)}
    assert paths == {(lab.host_dir(i) / iscsi.HOST_SR).resolve() for i in range(3)}
    assert sorted(iscsi.sessions(target)) == [f"{target.iqn}-host{i}" for i in range(3)]
    starts = [e for e in lab.events() if e["event"] == "start"]
    assert len(starts) == 3 and all(e["direct_io"] for e in starts)

    old = masters(lab)[0]
    survivors = [h for h in range(3) if h != old]
    backing = BlockDevice(lab.root / "heartbeat.sr")  # the target's file, no host's
    try:
        before = backing.read(slot_offset(survivors[0]))
        lab.kill(old)
        wait_for(lambda: len(masters(lab)) == 1 and masters(lab)[0] != old
                 and all(r.get("liveset") == survivors for r in lab.status()
                         if r["host"] != old), 15 * T, "failover")
        # the survivors' heartbeats reached the LUN's backing store through iSCSI
        assert backing.read(slot_offset(survivors[0])) != before
        key = load(lab.host_dir(0) / "node.toml").key
        assert GlobalBlock.decode(backing.read(0), key).generation == lab.load()["generation"]
    finally:
        backing.close()
    assert any(e["event"] == "commit" and e.get("removed") == [old] for e in lab.events())


@pytest.mark.slow
def test_initiators_see_each_others_writes_and_sr_format(tmp_path: Path) -> None:
    """Two initiators of one LUN: what one writes through the SR code, the other
    reads at once (the SR's O_DIRECT; a buffered reader sees stale pages on this
    chain), and ``hacluster sr-format`` on one is a valid SR on the other."""
    need_iscsi()
    backing = tmp_path / "lun.img"
    with backing.open("wb") as lun:
        lun.truncate(272 * 1024 * 1024)  # an SR with the default metadata region
    pids: list[int] = []
    targets: list[iscsi.Target] = []
    try:
        target = iscsi.start_target(backing, tmp_path / "tgtd.out", targets.append)
        files = [iscsi.attach(target, tmp_path / f"i{n}", f"{target.iqn}-i{n}",
                              tmp_path / f"i{n}.out", pids.append) for n in range(2)]
        seed = random.randrange(2**32)
        rng = random.Random(seed)
        devices = [BlockDevice(f) for f in files]
        try:
            assert all(d.direct for d in devices), "the chain refused O_DIRECT"
            for round_ in range(40):
                writer, reader = devices[round_ % 2], devices[1 - round_ % 2]
                offset = BLOCK * rng.randrange(64)
                reader.read(offset)  # the reader has looked at it before
                block = rng.randbytes(BLOCK)
                writer.write(offset, block)
                assert reader.read(offset) == block, f"stale read in round {round_}, seed {seed}"
        finally:
            for device in devices:
                device.close()
        key_file = tmp_path / "pool.key"
        key = new_pool_key()
        key_file.write_text(key.hex() + "\n")
        done = subprocess.run([sys.executable, "-m", "hacluster", "sr-format", str(files[0]),
                               "--hosts", "3", "--key-file", str(key_file)],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        other = BlockDevice(files[1])
        try:
            header = GlobalBlock.decode(other.read(0), key)
        finally:
            other.close()
        assert header.hosts == 3 and f"{header.generation:x}" in done.stdout
    finally:
        for n, pid in enumerate(pids):
            iscsi.detach(tmp_path / f"i{n}", pid)
        for started in targets:
            iscsi.stop_target(started)


def test_lab_refuses_an_unknown_or_unsupported_sr(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="'file' or 'iscsi', not 'nfs'"):
        LocalLab(tmp_path / "a").up(3, T, sr="nfs")
    with pytest.raises(LabError, match="local backend, not netns"):
        NetnsLab(tmp_path / "b").up(3, T, sr="iscsi")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    lacking = iscsi.missing()
    for program, package in iscsi.PROGRAMS.items():
        assert f"{program} (package {package})" in lacking


@pytest.mark.slow
def test_latency_benchmark_measures_the_plain_file_and_the_iscsi_chain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_iscsi()
    tool = load_tool("bench_sr_latency")
    assert tool.main(["--ops", "12", "--rounds", "2", "--dir", str(tmp_path)]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "medium" not in line]
    assert [r[0].strip() for r in rows if "NBD" not in r[0]] == ["plain file", "iSCSI"]
    assert all(r[1].strip() == "yes" and all(float(f) > 0 for f in r[2:]) for r in rows)
    assert not any(os.path.ismount(p) for p in tmp_path.iterdir())


def test_the_cli_passes_sr_and_reports_a_refusal_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hacluster", "lab", "--dir", str(tmp_path / "x"),
                           "up", "--backend", "netns", "--sr", "iscsi"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("hacluster: --sr iscsi runs on the local backend")
    assert "Traceback" not in done.stderr and not (tmp_path / "x").exists()
