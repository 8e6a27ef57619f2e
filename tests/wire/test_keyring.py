"""The key ring and every consumer of the pool key: each opens with either accepted key,
seals with the current one, and refuses what a retired key sealed."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from hacluster.core.messages import Phase, Report
from hacluster.node.keyfiles import beside, load_ring, store_ring
from hacluster.storage.anchor import decode_anchor, encode_anchor
from hacluster.storage.files import write_atomically
from hacluster.storage.redolog import (
    RecordCorrupt,
    decode_record,
    encode_record,
    load_backup,
    reseal_backup,
    save_backup,
)
from hacluster.storage.sr import BLOCK, BlockDevice, GlobalBlock, PoolState, SRError, reseal_header
from hacluster.wire import rpc
from hacluster.wire.codec import DecodeError, Sealer, new_pool_key
from hacluster.wire.keys import KeyRing, Keys, Purpose, derive_key

OLD, NEW = new_pool_key(), new_pool_key()
ACCEPTING = KeyRing(OLD).accepting(NEW)  # step 1: OLD seals, NEW opens too
SWITCHED = ACCEPTING.switched(NEW)  # step 2: NEW seals, OLD opens too
RETIRED = SWITCHED.alone()  # step 3: NEW alone
TARGET = rpc.target("b")


def report() -> Report:
    everyone = frozenset({0, 1, 2})
    return Report(generation=1, sender=1, boot=1, seq=1, phase=Phase.NORMAL, liveset=everyone,
                  hbdomain=everyone, sfdomain=everyone, statefile_access=True)


# ------------------------------------------------------------ the ring
def test_the_steps_of_a_rotation() -> None:
    assert ACCEPTING.keys == (OLD, NEW) and ACCEPTING.next == NEW
    assert SWITCHED.keys == (NEW, OLD) and SWITCHED.previous == OLD
    assert RETIRED.keys == (NEW,) and RETIRED.other is None
    assert SWITCHED.switched(NEW) is SWITCHED  # a repeated switch changes nothing
    assert ACCEPTING.alone() == KeyRing(OLD)  # the drop of step 1


def test_a_ring_holds_at_most_two_keys() -> None:
    with pytest.raises(ValueError, match="already under way"):
        SWITCHED.accepting(new_pool_key())
    with pytest.raises(ValueError, match="does not hold that key"):
        KeyRing(OLD).switched(NEW)  # never accepted here
    with pytest.raises(ValueError, match="at most two"):
        KeyRing(OLD, next=NEW, previous=new_pool_key())
    with pytest.raises(ValueError, match="must differ"):
        KeyRing(OLD, next=OLD)
    with pytest.raises(ValueError, match="32 bytes"):
        KeyRing(b"short")


def test_open_with_tries_the_current_key_first_and_the_other_only_on_failure() -> None:
    tried: list[bytes] = []

    def attempt(key: bytes) -> bytes:
        tried.append(key)
        if len(tried) == 1 and fail_first:
            raise ValueError("no")
        return key

    fail_first = False
    assert SWITCHED.open_with(Purpose.RPC, attempt, ValueError) == derive_key(NEW, Purpose.RPC)
    assert len(tried) == 1
    tried.clear()
    fail_first = True
    assert SWITCHED.open_with(Purpose.RPC, attempt, ValueError) == derive_key(OLD, Purpose.RPC)
    assert len(tried) == 2


# ------------------------------------------------------------ every consumer
@pytest.mark.parametrize("maker", [Sealer.for_heartbeats, Sealer.for_slots])
def test_reports_open_with_either_key_and_seal_with_the_current(
        maker: Callable[[Keys, int], Sealer]) -> None:
    by_old, by_new = maker(OLD, 3).seal(report()), maker(NEW, 3).seal(report())
    for ring in (ACCEPTING, SWITCHED):
        sealer = maker(ring, 3)
        assert sealer.open(by_old) == sealer.open(by_new) == report()
    assert maker(OLD, 3).open(maker(ACCEPTING, 3).seal(report())) == report()  # OLD seals
    assert maker(NEW, 3).open(maker(SWITCHED, 3).seal(report())) == report()  # NEW seals
    with pytest.raises(DecodeError, match="authentication failed"):
        maker(RETIRED, 3).open(by_old)
    with pytest.raises(DecodeError, match="authentication failed"):
        maker(ACCEPTING, 3).open(maker(new_pool_key(), 3).seal(report()))


def test_the_sr_global_block_verifies_with_either_key_and_is_resealed(tmp_path: Path) -> None:
    header = GlobalBlock(7, PoolState.ACTIVE, None, 3)
    assert GlobalBlock.decode(header.encode(OLD), SWITCHED) == header
    assert GlobalBlock.decode(header.encode(SWITCHED), NEW) == header  # MACed with NEW
    with pytest.raises(SRError, match="not authenticated"):
        GlobalBlock.decode(header.encode(OLD), RETIRED)
    path = tmp_path / "sr"
    path.write_bytes(header.encode(OLD) + bytes(BLOCK))
    device = BlockDevice(path)
    try:
        assert reseal_header(device, SWITCHED) == header
        assert GlobalBlock.decode(device.read(0), RETIRED) == header
    finally:
        device.close()


def test_anchors_verify_with_either_key() -> None:
    assert decode_anchor(encode_anchor(5, OLD), SWITCHED) == 5
    assert decode_anchor(encode_anchor(6, SWITCHED), NEW) == 6
    with pytest.raises(ValueError, match="tag mismatch"):
        decode_anchor(encode_anchor(5, OLD), RETIRED)


def test_redo_log_records_verify_with_either_key_even_mixed_in_one_chain() -> None:
    snapshot = encode_record("snapshot", 1, b"state", OLD)
    first = decode_record(snapshot, SWITCHED)
    delta = encode_record("delta", 2, b"change", SWITCHED, previous=first.tag)  # NEW tags
    assert decode_record(delta, SWITCHED, previous=first.tag).payload == b"change"
    assert decode_record(delta, NEW, previous=first.tag).generation == 2
    with pytest.raises(RecordCorrupt, match="tag mismatch"):
        decode_record(snapshot, RETIRED)


def test_a_backup_is_resealed_under_the_current_key(tmp_path: Path) -> None:
    path = tmp_path / "pooldb.backup"
    assert reseal_backup(path, SWITCHED) is None  # none yet: nothing written
    save_backup(path, 9, b"payload", OLD)
    assert load_backup(path, ACCEPTING) == (9, b"payload")
    assert reseal_backup(path, SWITCHED) == 9
    assert load_backup(path, RETIRED) == (9, b"payload")
    with pytest.raises(RecordCorrupt):
        load_backup(path, OLD)


async def test_rpc_between_hosts_a_step_apart_and_a_retired_key_refused() -> None:
    held = {"ring": SWITCHED}

    async def echo(request: dict[str, object]) -> dict[str, object]:
        return {"ok": True, "got": request["op"]}

    stats = rpc.RpcStats()
    server = await rpc.serve("127.0.0.1", 0, lambda: held["ring"], echo, stats, target=TARGET)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for client in (ACCEPTING, SWITCHED, NEW):  # a step apart, or NEW alone: all open
            answer = await rpc.call("127.0.0.1", port, client, {"op": "x"}, 5, target=TARGET)
            assert answer["got"] == "x"
        # OLD alone (a host that never accepted NEW): its request opens, the answer does not
        with pytest.raises(rpc.RpcError, match="reply rejected"):
            await rpc.call("127.0.0.1", port, OLD, {"op": "x"}, 5, target=TARGET)
        held["ring"] = RETIRED  # read per connection: no restart
        with pytest.raises(rpc.RpcError, match="closed without answering"):
            await rpc.call("127.0.0.1", port, ACCEPTING, {"op": "x"}, 5, target=TARGET)
        await asyncio.sleep(0.05)
        assert stats.bad_requests == 1 and stats.answered == 4


# ------------------------------------------------------------ the files
def test_key_files_follow_the_ring_and_a_restart_reads_them_back(tmp_path: Path) -> None:
    path = tmp_path / "pool.key"
    write_atomically(path, OLD.hex().encode())
    assert load_ring(path) == KeyRing(OLD)
    for ring in (ACCEPTING, SWITCHED, RETIRED):
        store_ring(path, ring)
        assert load_ring(path) == ring
        for file in tmp_path.glob("pool.key*"):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.key"]
    store_ring(path, KeyRing(NEW, next=OLD))
    store_ring(path, KeyRing(NEW))  # a drop
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.key"]


def test_a_switch_cut_short_leaves_a_ring_a_host_can_run_with(tmp_path: Path) -> None:
    path = tmp_path / "pool.key"
    store_path = [path, beside(path, ".next"), beside(path, ".previous")]
    # cut after .previous was written: still step 1 (OLD seals, NEW opens)
    for file, key in zip(store_path, (OLD, NEW, OLD), strict=True):
        file.write_text(key.hex())
    assert load_ring(path) == ACCEPTING
    # cut after pool.key was written: step 2 (NEW seals, OLD opens)
    path.write_text(NEW.hex())
    assert load_ring(path) == SWITCHED
