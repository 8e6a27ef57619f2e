"""hacluster pool init on real files and a real SR file: what it writes, where, with which
modes, and every refusal leaving everything as it was."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from hacluster.deploy.init import Created, InitRequest, init_pool
from hacluster.lab.workloads import default_pool
from hacluster.model import poolfile
from hacluster.model.address import ConfigError
from hacluster.node.config import load
from hacluster.node.keyfiles import read_key
from hacluster.storage.sr import BLOCK, BlockDevice, GlobalBlock, PoolState, SRError, max_pool_hosts

from ..conftest import new_sr
from .conftest import request

HOST_FILES = {"node.toml", "pool.key", "host.pem", "host.key", "ca.pem", "pool.secret",
              "pool.toml"}


def header(sr: Path, key: bytes) -> GlobalBlock:
    device = BlockDevice(sr)
    try:
        return GlobalBlock.decode(device.read(0), key)
    finally:
        device.close()


def test_every_destination_gets_its_files_and_no_more(created: Created) -> None:
    out = created.out
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "ca", "hosts", "operator"]
    assert sorted(p.name for p in (out / "ca").iterdir()) == ["ca.key", "ca.pem"]
    assert sorted(p.name for p in (out / "operator").iterdir()) == \
        ["ca.pem", "hactl.toml", "pool.secret"]
    assert [d.name for d in created.host_dirs] == ["host0", "host1", "host2"]
    for directory in created.host_dirs:
        assert {p.name for p in directory.iterdir()} == HOST_FILES
    # the CA key is in ca/ alone; secrets and keys are 0600, the CA's directory 0700
    assert [p.relative_to(out) for p in out.rglob("ca.key")] == [Path("ca/ca.key")]
    assert stat.S_IMODE((out / "ca").stat().st_mode) == 0o700
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in out.rglob("*"):
        if path.name.endswith((".key", ".secret")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not list(out.parent.glob(".pool.init-*"))  # no staging left behind
    assert (out / "README.txt").read_text().startswith("pool 'test': 3 hosts")


def test_each_host_loads_its_config_and_the_sr_opens_with_its_key(created: Created) -> None:
    keys = set()
    for index, directory in enumerate(created.host_dirs):
        config = load(directory / "node.toml")
        assert config.index == index and config.timing.T == 5.0
        assert [str(h[0]) for h in config.hosts] == [f"127.0.0.{i}:7000" for i in (1, 2, 3)]
        assert config.sr == created.request.sr.absolute()
        assert config.mgmt is not None and config.mgmt.port == 7002 and config.agent_port == 7001
        assert config.pool is not None and config.pool.name == "test"
        assert [h.name for h in config.pool.pool.hosts] == ["host0", "host1", "host2"]
        keys.add(config.key)
    assert len(keys) == 1
    found = header(created.request.sr, keys.pop())
    assert found == GlobalBlock(created.generation, PoolState.INIT, None, 16)  # the slots
    hactl = tomllib.loads((created.out / "operator" / "hactl.toml").read_text())
    assert hactl == {"servers": ["127.0.0.1:7002", "127.0.0.2:7002", "127.0.0.3:7002"],
                     "ca": "ca.pem", "secret_file": "pool.secret"}
    secrets = {(d / "pool.secret").read_bytes() for d in created.host_dirs}
    assert secrets == {(created.out / "operator" / "pool.secret").read_bytes()}


def test_options_reach_every_node_toml(tmp_path: Path) -> None:
    pool = tmp_path / "vms.toml"
    pool.write_text(poolfile.dump(default_pool(3)))
    made = init_pool(request(
        tmp_path, mode="clustered", timeout=12.5, agent_port=9001, mgmt_port=9002,
        host_sr="/dev/disk/by-id/lun0", vm_dir="/srv/vms", pool_file=poolfile.load(pool)))
    config = load(made.host_dirs[1] / "node.toml")
    assert config.mode.value == "clustered" and config.timing.T == 12.5
    assert (config.agent_port, config.mgmt is not None and config.mgmt.port) == (9001, 9002)
    assert str(config.sr) == "/dev/disk/by-id/lun0" and str(config.vm_dir) == "/srv/vms"
    assert config.pool is not None and len(config.pool.pool.vms) == len(default_pool(3).pool.vms)
    assert config.pool.name == "test"  # the given pool file, named by --name


def fingerprint(paths: list[Path]) -> list[tuple[str, str]]:
    """Every file under ``paths`` with a hash of its bytes (FUSE mounts: their backing
    files are hashed instead)."""
    files = [p for root in paths for p in sorted([root, *root.rglob("*")])
             if p.is_file() and not any(part.startswith("fuse") for part in p.parts)]
    return [(str(p), hashlib.sha256(p.read_bytes()).hexdigest()) for p in files]


REFUSALS: list[tuple[dict[str, object], type[Exception], str]] = [
    ({"name": ""}, ConfigError, "--name"),
    ({"name": "bad\tname"}, ConfigError, "--name"),
    ({"mode": "quorum"}, ConfigError, "--mode"),
    ({"timeout": 0.5}, ConfigError, "timeout-floor"),
    ({"timeout": 4000.0}, ConfigError, "at most 3600"),
    ({"timeout": float("nan")}, ConfigError, "--timeout"),
    ({"agent_port": 7002}, ConfigError, "each needs its own TCP port"),
    ({"mgmt_port": 0}, ConfigError, "--mgmt-port"),
    ({"host_memory": -1}, ConfigError, "--host-memory"),
    ({"vm_dir": ""}, ConfigError, "--vm-dir"),
    ({"host_sr": "a\0b"}, ConfigError, "--host-sr"),
]


@pytest.mark.parametrize(("change", "error", "message"), REFUSALS,
                         ids=[m for _, _, m in REFUSALS])
def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path, change: dict[str, object],
                                                  error: type[Exception], message: str) -> None:
    req = request(tmp_path, **change)
    before = fingerprint([tmp_path])
    with pytest.raises(error, match=message):
        init_pool(req)
    assert fingerprint([tmp_path]) == before and not req.out.exists()


def refused(req: InitRequest, message: str) -> None:
    """``req`` is refused with ``message``; nothing under its SR's directory changed."""
    root = req.out.absolute().parent
    before = fingerprint([root])
    with pytest.raises((ConfigError, SRError), match=message):
        init_pool(req)
    assert fingerprint([root]) == before
    assert not list(root.glob(".*.init-*"))


def test_an_sr_holding_a_pool_or_data_is_refused_unless_forced(created: Created,
                                                               tmp_path: Path) -> None:
    again = request(tmp_path, out=tmp_path / "second")
    refused(again, "holds a heartbeat SR .* --force formats it")
    assert not again.out.exists()
    first_key = read_key(created.host_dirs[0] / "pool.key")
    assert header(again.sr, first_key).generation == created.generation  # untouched
    forced = init_pool(request(tmp_path, out=tmp_path / "second", force=True))
    new_key = read_key(forced.host_dirs[0] / "pool.key")
    assert header(again.sr, new_key).generation == forced.generation
    with pytest.raises(SRError, match="not authenticated"):
        header(again.sr, first_key)
    # any data in the heartbeat region: a file system, a partition table
    data = new_sr(tmp_path / "data.img")
    with data.open("r+b") as out:
        out.seek(3 * BLOCK + 17)
        out.write(b"\x53\xef")
    refused(request(tmp_path, sr=data, out=tmp_path / "third"), "non-zero data at byte 12305")


def test_unusable_srs_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    refused(request(tmp_path, sr=tmp_path / "missing.img"), "does not exist")
    refused(request(tmp_path, sr=tmp_path), "neither a regular file nor a block device")
    small = new_sr(tmp_path / "small.img", 4 * 1024 * 1024 + BLOCK)
    refused(request(tmp_path, sr=small), "an SR needs at least")


def test_output_directory_must_be_new_or_empty(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "node.toml").write_text("keep me")
    refused(request(tmp_path, out=busy), "not an empty directory")
    assert (busy / "node.toml").read_text() == "keep me"
    refused(request(tmp_path, out=tmp_path / "no" / "parent"), "is not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert init_pool(request(tmp_path, out=empty)).host_dirs[0].parent == empty / "hosts"


def test_a_pool_file_of_other_hosts_is_refused(tmp_path: Path) -> None:
    refused(request(tmp_path, pool_file=default_pool(4)), "--pool lists 4 hosts, --hosts 3")


def test_sr_refusing_o_direct_is_refused_unless_allowed(
        tmp_path: Path, fuse_medium: Callable[[bool], tuple[Path, Path]]) -> None:
    sr, _ = fuse_medium(True)
    refused(request(tmp_path, sr=sr), "refuses O_DIRECT.*--allow-buffered")
    made = init_pool(request(tmp_path, sr=sr, allow_buffered=True))
    assert not made.volume.direct and "buffered" in (made.out / "README.txt").read_text()
    direct, _ = fuse_medium(False)
    assert init_pool(request(tmp_path, sr=direct, out=tmp_path / "d")).volume.direct


def test_sr_failing_its_reads_is_refused(tmp_path: Path,
                                         fuse_medium: Callable[[bool], tuple[Path, Path]]
                                         ) -> None:
    sr, control = fuse_medium(False)
    control.write_text("error\n")
    refused(request(tmp_path, sr=sr), "reading it with O_DIRECT failed")


def cli(*words: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hacluster", "pool", "init", *words],
                          capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def test_the_command_prints_what_to_copy_where(tmp_path: Path) -> None:
    new_sr(tmp_path / "sr.img")
    done = cli("--name", "lab1", "--hosts", "127.0.0.1,127.0.0.2:7100", "--sr", "sr.img",
               "--heartbeat-port", "7200", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "hosts/host0/  ->  /etc/hacluster/ on host0 (127.0.0.1:7200)" in out
    assert "hosts/host1/  ->  /etc/hacluster/ on host1 (127.0.0.2:7100)" in out
    assert "operator/  ->  the operator's machine" in out
    assert "keep the CA key offline" in out and "pool-ha-enable" in out
    assert "7100/udp, 7200/udp" in out and "7001/tcp" in out and "7002/tcp" in out
    assert (tmp_path / "lab1" / "README.txt").read_text() == out


@pytest.mark.parametrize(("words", "message"), [
    (["--hosts", "127.0.0.1,127.0.0.1"], "is given twice"),
    (["--hosts", "127.0.0.1:99999"], "a port is a number 1..65535"),
    (["--hosts", "127.0.0.1", "--agent-port", "0"], "a port is a number 1..65535"),
    (["--hosts", "127.0.0.1", "--pool", "missing.toml"], "missing.toml"),
    (["--hosts", ",".join(f"127.0.{i // 250}.{i % 250 + 1}"
                          for i in range(max_pool_hosts() + 1))],
     "a pool has at most"),
])
def test_bad_command_lines_exit_2_and_write_nothing(tmp_path: Path, words: list[str],
                                                    message: str) -> None:
    new_sr(tmp_path / "sr.img")
    before = fingerprint([tmp_path])
    done = cli("--name", "p", "--sr", "sr.img", *words, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert fingerprint([tmp_path]) == before and not (tmp_path / "p").exists()


def test_a_name_that_is_no_directory_name_needs_out(tmp_path: Path) -> None:
    new_sr(tmp_path / "sr.img")
    done = cli("--name", "prod east", "--hosts", "127.0.0.1", "--sr", "sr.img", cwd=tmp_path)
    assert done.returncode == 2 and "--out is needed" in done.stderr
    done = cli("--name", "prod east", "--hosts", "127.0.0.1", "--sr", "sr.img", "--out",
               "east", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert poolfile.load(tmp_path / "east/hosts/host0/pool.toml").name == "prod east"
