"""hacluster node --check on a pool made by pool init, sound and broken: every finding
named, exit 0 or 1, and nothing written."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from hacluster.cli import main
from hacluster.core.pooldb import HASettings
from hacluster.core.timing import Timing
from hacluster.deploy.check import Level, check_node
from hacluster.deploy.init import Created, init_pool
from hacluster.deploy.poolfiles import write_key
from hacluster.mgmt.database import snapshot_bytes
from hacluster.mgmt.tls import create_pool_ca, issue_certificate
from hacluster.model.pooldata import seed
from hacluster.model.tomlfile import toml_fields
from hacluster.node.config import load
from hacluster.node.keyfiles import read_key
from hacluster.storage.redolog import save_backup
from hacluster.storage.sr import BLOCK, PoolState, format_sr
from hacluster.storage.volume import create_sr_file
from hacluster.wire.codec import new_pool_key

from .conftest import request
from .test_pool_init import fingerprint


def run(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["node", "--check", "--config", str(config)])
    return code, capsys.readouterr().out


def failures(config: Path) -> dict[str, str]:
    return {f.topic: f.text for f in check_node(config).findings if f.level is Level.FAIL}


def warnings(config: Path) -> dict[str, str]:
    return {f.topic: f.text for f in check_node(config).findings if f.level is Level.WARN}


def test_a_fresh_pool_is_ready_and_every_timing_rule_is_printed(
        created: Created, capsys: pytest.CaptureFixture[str]) -> None:
    config = created.host_dirs[1] / "node.toml"
    before = fingerprint([created.out, created.request.sr])
    code, out = run(config, capsys)
    assert code == 0, out
    for topic in ("config", "pool", "tls", "sr", "o_direct", "size", "layout", "slots"):
        assert f"  ok    {topic} " in out, topic
    assert "host 1 of 3 (127.0.0.2:7000" in out and "the medium takes O_DIRECT" in out
    assert f"generation {created.generation:x}, state INIT" in out
    rules = Timing.derive(5.0).rules()
    assert out.count(" margin ") == len(rules)
    assert "safety-inequality" in out and "fence_window = " in out
    assert out.rstrip().endswith("ready: nothing failed")
    # it wrote nothing: no boot counter, no socket, no log, the SR byte for byte
    assert fingerprint([created.out, created.request.sr]) == before


def test_a_wrong_pool_key_is_named(created: Created,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    write_key(created.host_dirs[0] / "pool.key", new_pool_key())
    code, out = run(created.host_dirs[0] / "node.toml", capsys)
    assert code == 1 and "NOT READY: 1 check(s) failed" in out
    assert "not authenticated by this pool key" in failures(
        created.host_dirs[0] / "node.toml")["layout"]
    assert "pool.key is not the pool's" in out


def test_another_pools_sr_and_an_unformatted_one_are_named(created: Created,
                                                          tmp_path: Path) -> None:
    config = created.host_dirs[2] / "node.toml"
    key = read_key(created.host_dirs[2] / "pool.key")
    format_sr(created.request.sr, 4, key, 99, metadata=BLOCK * 2)
    assert "formatted for 4 slots" in failures(config)["layout"]
    init_pool(request(tmp_path, out=tmp_path / "other", force=True))
    assert "not authenticated" in failures(config)["layout"]
    with created.request.sr.open("r+b") as sr:
        sr.write(bytes(BLOCK))
    assert "not formatted" in failures(config)["layout"]


def test_an_sr_too_small_or_missing_fails(created: Created) -> None:
    config = created.host_dirs[0] / "node.toml"
    with created.request.sr.open("r+b") as sr:
        sr.truncate(5 * 1024 * 1024)
    assert "an SR needs at least" in failures(config)["size"]
    created.request.sr.unlink()
    found = failures(config)
    assert "does not exist" in found["sr"] and "size" not in found


def test_each_other_heartbeat_sr_is_checked(created: Created, tmp_path: Path) -> None:
    config = created.host_dirs[0] / "node.toml"
    for name in ("empty", "small", "junk"):
        create_sr_file(tmp_path / f"{name}.sr")
    with (tmp_path / "small.sr").open("r+b") as small:
        small.truncate(BLOCK)
    with (tmp_path / "junk.sr").open("r+b") as junk:
        junk.write(b"ext4" * 1024)
    srs = {name: str(tmp_path / f"{name}.sr") for name in ("empty", "small", "junk", "gone")}
    with config.open("a") as node:
        node.write(toml_fields(heartbeat_srs=srs)[0] + "\n")
    report = {f.topic: (f.level, f.text) for f in check_node(config).findings}
    assert report["sr empty"][0] is Level.OK and report["sr empty"][1].endswith(
        "12.0 MiB, O_DIRECT, empty")
    assert report["sr small"][0] is Level.FAIL and "needs at least 12 MiB" in report["sr small"][1]
    assert report["sr junk"][0] is Level.WARN and "is not empty" in report["sr junk"][1] \
        and "--force" in report["sr junk"][1]
    assert report["sr gone"][0] is Level.FAIL and "does not exist" in report["sr gone"][1]
    assert report["layout"][0] is Level.OK  # the SR in use is checked as before


@pytest.mark.parametrize(("missing", "message"), [
    ("pool.key", "pool key file"), ("host.pem", "does not exist"),
    ("pool.secret", "secret_file"), ("pool.toml", "pool.toml"),
])
def test_a_missing_file_fails_the_config(created: Created, missing: str, message: str) -> None:
    (created.host_dirs[0] / missing).unlink()
    found = failures(created.host_dirs[0] / "node.toml")
    assert list(found) == ["config"] and message in found["config"]


def test_a_certificate_of_another_ca_or_address_fails(created: Created, tmp_path: Path) -> None:
    directory = created.host_dirs[0]
    config = directory / "node.toml"
    other = create_pool_ca(tmp_path / "other-ca", "other")
    issue_certificate(other, directory, "host", ["127.0.0.1"])
    assert "was not issued by the pool CA" in failures(config)["tls"]
    pool_ca = created.out / "ca"
    issue_certificate(replace(other, cert=pool_ca / "ca.pem", key=pool_ca / "ca.key"),
                      directory, "host", ["127.0.0.9"])
    assert "does not list this host's address(es) ['127.0.0.1']" in failures(config)["tls"]


def test_a_generation_other_than_this_hosts_last_is_a_warning(created: Created) -> None:
    directory = created.host_dirs[0]
    config = load(directory / "node.toml")
    format_sr(created.request.sr, created.request.capacity, config.key, 0x5555,
              metadata=BLOCK * 2, state=PoolState.ACTIVE)
    assert config.pool is not None
    db = replace(seed(config.pool), ha=HASettings(True, 5.0, "heartbeat-sr", 0x4444))
    save_backup(directory / "pooldb.backup", db.generation, snapshot_bytes(db), config.key)
    found = warnings(directory / "node.toml")
    assert "HA on at generation 4444, the SR holds 5555" in found["database"]
    assert failures(directory / "node.toml") == {}  # it joins the SR's generation
    save_backup(directory / "pooldb.backup", db.generation, snapshot_bytes(db), new_pool_key())
    assert "does not open with this pool key" in warnings(directory / "node.toml")["database"]


def test_a_medium_refusing_o_direct_is_a_warning(
        tmp_path: Path, fuse_medium: Callable[[bool], tuple[Path, Path]]) -> None:
    sr, control = fuse_medium(True)
    made = init_pool(request(tmp_path, sr=sr, allow_buffered=True))
    config = made.host_dirs[0] / "node.toml"
    assert "refused O_DIRECT" in warnings(config)["o_direct"]
    assert failures(config) == {}
    control.write_text("error\n")
    assert "reading it buffered failed" in failures(config)["sr"]


def test_check_refuses_armed() -> None:
    done = subprocess.run([sys.executable, "-m", "hacluster", "node", "--check", "--armed",
                           "--config", "node.toml"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "--check starts nothing" in done.stderr
