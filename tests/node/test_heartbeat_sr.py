"""Which heartbeat SR a host starts on, what it finds on another, and moving its lanes:
on real SR files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hacluster.core.messages import Report
from hacluster.core.node import Mode
from hacluster.core.pool import PoolError
from hacluster.core.pooldb import DEFAULT_HEARTBEAT_SR
from hacluster.core.timing import Timing
from hacluster.model.address import Address, ConfigError
from hacluster.node.config import NodeConfig
from hacluster.node.heartbeat_sr import choose, describe, prepare, start_sr
from hacluster.node.sr_thread import Storage
from hacluster.storage.sr import BLOCK, PoolState, format_sr
from hacluster.storage.volume import MIN_SIZE, create_sr_file
from hacluster.wire.codec import new_pool_key

from ..conftest import report
from ..fakes import HOSTS, KEY


def config_with(tmp_path: Path, **others: Path) -> NodeConfig:
    """Host 0 of three, its SR at ``tmp_path/a.sr``, mapping ``others`` (uuid -> path)."""
    return NodeConfig(
        index=0, hosts=tuple((Address(f"10.9.0.{i + 1}", 7000),) for i in range(HOSTS)),
        sr=tmp_path / "a.sr", key=KEY, timing=Timing.derive(5.0), mode=Mode.STATEFILE,
        status_socket=tmp_path / "status.sock", log=None,
        heartbeat_srs=tuple(others.items()))


def sr_file(path: Path, state: PoolState | None, key: bytes = KEY) -> Path:
    """An SR file: empty (``state`` None) or formatted by the pool of ``key``."""
    create_sr_file(path)
    if state is not None:
        format_sr(path, HOSTS, key, 7, metadata=MIN_SIZE - 4 * 1024 * 1024, state=state)
    return path


@pytest.mark.parametrize(("named", "active", "chosen"), [
    ("a", {"a": True, "b": True}, "a"),  # the one the backup names, while active
    ("a", {"a": False, "b": True}, "b"),  # moved while this host was away
    ("a", {"a": False, "b": True, "c": True}, "a"),  # two others active: not guessed
    ("a", {"a": False, "b": False}, "a"),  # HA off everywhere: the named one
    ("a", {}, "a"),
])
def test_choose(named: str, active: dict[str, bool], chosen: str) -> None:
    assert choose(named, active) == chosen


def test_a_host_starts_on_the_named_sr_while_it_is_active(tmp_path: Path) -> None:
    sr_file(tmp_path / "a.sr", PoolState.ACTIVE)
    other = sr_file(tmp_path / "b.sr", PoolState.ACTIVE)
    config = config_with(tmp_path, b=other)
    assert start_sr(config, KEY, DEFAULT_HEARTBEAT_SR) == (DEFAULT_HEARTBEAT_SR, config.sr)
    assert start_sr(config, KEY, "b") == ("b", other)


def test_a_host_away_during_a_move_finds_the_only_active_sr_of_its_pool(
        tmp_path: Path) -> None:
    sr_file(tmp_path / "a.sr", PoolState.INVALID)  # disabled before the move
    moved = sr_file(tmp_path / "b.sr", PoolState.ACTIVE)
    strange = sr_file(tmp_path / "c.sr", PoolState.ACTIVE, key=new_pool_key())  # not ours
    config = config_with(tmp_path, b=moved, c=strange)
    assert start_sr(config, KEY, DEFAULT_HEARTBEAT_SR) == ("b", moved)


def test_with_ha_off_everywhere_a_host_keeps_the_named_sr(tmp_path: Path) -> None:
    sr_file(tmp_path / "a.sr", PoolState.INVALID)
    config = config_with(tmp_path, b=sr_file(tmp_path / "b.sr", None))
    assert start_sr(config, KEY, DEFAULT_HEARTBEAT_SR) == (DEFAULT_HEARTBEAT_SR, config.sr)


def test_a_backup_naming_an_sr_node_toml_does_not_map_stops_the_start(tmp_path: Path) -> None:
    config = config_with(tmp_path, b=sr_file(tmp_path / "b.sr", None))
    with pytest.raises(ConfigError, match=r"heartbeat SR is 'c'.*\[heartbeat_srs\].*"
                                          r"\['heartbeat-sr', 'b'\]"):
        start_sr(config, KEY, "c")


def test_describe_says_what_each_host_finds(tmp_path: Path) -> None:
    config = config_with(
        tmp_path, empty=sr_file(tmp_path / "e.sr", None),
        ours=sr_file(tmp_path / "o.sr", PoolState.INVALID),
        theirs=sr_file(tmp_path / "t.sr", PoolState.ACTIVE, key=new_pool_key()),
        small=tmp_path / "s.sr", missing=tmp_path / "nowhere.sr")
    (tmp_path / "s.sr").write_bytes(bytes(BLOCK))

    empty = describe(config, KEY, "empty")
    assert empty["size"] == MIN_SIZE and empty["holds"] == "" and "generation" not in empty
    ours = describe(config, KEY, "ours")
    assert ours["generation"] == 7 and ours["state"] == "INVALID" and "holds" not in ours
    assert "another pool's" in describe(config, KEY, "theirs")["holds"]
    assert describe(config, KEY, "small")["size"] == BLOCK
    assert "does not exist" in describe(config, KEY, "missing")["error"]
    assert "maps no path for SR 'other'" in describe(config, KEY, "other")["error"]


async def test_prepare_writes_the_generation_unarmed_and_keeps_the_database_region(
        tmp_path: Path) -> None:
    other = sr_file(tmp_path / "b.sr", None)
    with other.open("r+b") as volume:  # a slot someone wrote, and a database record
        volume.seek(BLOCK)
        volume.write(b"old slot")
        volume.seek(4 * 1024 * 1024)
        volume.write(b"redo log")
    config = config_with(tmp_path, b=other, gone=tmp_path / "nowhere.sr")
    prepare(config, KEY, "b", 41)
    found = describe(config, KEY, "b")
    assert (found["generation"], found["state"]) == (41, "INVALID")
    data = other.read_bytes()
    assert data[BLOCK:2 * BLOCK] == bytes(BLOCK)  # the slots emptied
    assert data[4 * 1024 * 1024:][:8] == b"redo log"  # the database's region untouched
    with pytest.raises(PoolError, match="could not write heartbeat SR 'gone'"):
        prepare(config, KEY, "gone", 42)
    with pytest.raises(PoolError, match="maps no path for heartbeat SR 'c'"):
        prepare(config, KEY, "c", 43)


async def test_storage_moves_its_lanes_to_another_sr(tmp_path: Path) -> None:
    first = sr_file(tmp_path / "a.sr", PoolState.ACTIVE)
    second = sr_file(tmp_path / "b.sr", PoolState.ACTIVE)
    config = config_with(tmp_path, b=second)
    storage = Storage(config, config.keys, DEFAULT_HEARTBEAT_SR, first)
    try:
        assert (await storage.write(report(0, 1, generation=7)))[0]
        with pytest.raises(OSError):
            storage.move("c", tmp_path / "nowhere.sr")
        assert storage.uuid == DEFAULT_HEARTBEAT_SR  # a move that fails keeps the SR

        storage.move("b", second)
        assert (storage.uuid, storage.path) == ("b", second)
        assert (await storage.write(report(0, 2, generation=7)))[0]
        slots, _, error = await storage.read()
    finally:
        storage.close()
    assert slots is not None, error
    assert isinstance(slots[0], Report) and slots[0].seq == 2  # on the new SR
    old = Storage(config, config.keys, DEFAULT_HEARTBEAT_SR, first)
    try:
        slots, _, _ = await old.read()
    finally:
        old.close()
    assert slots is not None and isinstance(slots[0], Report) and slots[0].seq == 1
