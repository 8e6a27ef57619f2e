"""The pool database core: validated changes, plan protection, snapshots and replay."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from hacluster.core.pool import PoolError, Power, Priority
from hacluster.core.pooldb import KEEP_AUDIT, KEEP_MESSAGES, PoolDB, apply
from hacluster.lab.workloads import default_pool
from hacluster.model.pooldata import from_data, seed, to_data


@pytest.fixture
def db() -> PoolDB:
    return seed(default_pool(3))


def enabled(db: PoolDB) -> PoolDB:
    return apply(db, {"op": "ha-enable", "timeout": 30, "heartbeat_sr": "vm-sr",
                      "sr_generation": 7})


def test_vm_param_set_protects_and_keeps_the_order(db: PoolDB) -> None:
    new = apply(db, {"op": "vm-set", "vm": "vm-batch",
                     "fields": {"ha-restart-priority": "restart", "order": "3"}})
    assert new.generation == db.generation + 1
    vm = new.pool.vm("vm-batch")
    assert (vm.priority, vm.order) == (Priority.RESTART, 3)
    unprotected = apply(new, {"op": "vm-set", "vm": "vm-batch",
                              "fields": {"ha-restart-priority": ""}})
    assert unprotected.pool.vm("vm-batch").priority is Priority.NONE
    assert unprotected.pool.vm("vm-batch").order == 3
    assert db.pool.vm("vm-batch").priority is Priority.BEST_EFFORT  # the old value is intact


@pytest.mark.parametrize(("change", "says"), [
    ({"op": "vm-set", "vm": "vm-nope", "fields": {"order": "1"}}, "no VM with uuid vm-nope"),
    ({"op": "vm-set", "vm": "vm-sql", "fields": {"order": "-1"}}, "whole number"),
    ({"op": "vm-set", "vm": "vm-sql", "fields": {"order": "two"}}, "whole number"),
    ({"op": "vm-set", "vm": "vm-sql", "fields": {"ha-restart-priority": "always"}},
     "restart, best-effort"),
    ({"op": "vm-set", "vm": "vm-sql", "fields": {"start-delay": "nan"}}, "seconds"),
    ({"op": "vm-set", "vm": "vm-sql", "fields": {"memory": "1"}}, "cannot be set"),
    ({"op": "vm-set", "vm": "vm-sql", "fields": {}}, "nothing to set"),
    ({"op": "pool-set", "fields": {"ha-host-failures-to-tolerate": "3"}}, "0..2"),
    ({"op": "pool-set", "fields": {"ha-allow-overcommit": "yes"}}, "true or false"),
    ({"op": "pool-set", "fields": {"name-label": " "}}, "must not be empty"),
    ({"op": "host-enabled", "host": "host-9", "enabled": False}, "no host"),
    ({"op": "ha-disable"}, "not enabled"),
    ({"op": "ha-enable", "timeout": 0.5, "heartbeat_sr": "x", "sr_generation": 1},
     "timeout-floor"),
    ({"op": "ha-enable", "timeout": float("inf"), "heartbeat_sr": "x", "sr_generation": 1},
     "timeout-ceiling"),
    ({"op": "ha-enable", "timeout": float("nan"), "heartbeat_sr": "x", "sr_generation": 1},
     "timeout"),
    ({"op": "vm-install", "vm": "vm-sql", "fields": {"name-label": "x", "memory": "1"}},
     "already installed"),
    ({"op": "vm-install", "vm": "", "fields": {"name-label": "x", "memory": "1"}}, "uuid"),
    ({"op": "vm-install", "vm": "a\nb", "fields": {"name-label": "x", "memory": "1"}},
     "printable"),
    ({"op": "vm-install", "vm": "v", "fields": {"name-label": "x"}}, "needs name-label and"),
    ({"op": "vm-install", "vm": "v", "fields": {"name-label": "x", "memory": "0"}},
     "above 0"),
    ({"op": "vm-install", "vm": "v", "fields": {"name-label": "x", "memory": "1e3"}},
     "whole number"),
    ({"op": "vm-install", "vm": "v", "fields": {"name-label": "x", "memory": "1",
                                                "power": "running"}}, "cannot be set"),
    ({"op": "vm-install", "vm": "v", "fields": {"name-label": "x", "memory": "1",
                                                "devices": "gpu0",
                                                "ha-restart-priority": "restart"}},
     "only be protected as best-effort"),
    ({"op": "vm-uninstall", "vm": "vm-nope"}, "no VM"),
    ({"op": "vm-power", "vm": "vm-sql", "power": "halted"}, "Remove its protection first"),
    ({"op": "vm-power", "vm": "vm-batch", "power": "paused"}, "running, halted or suspended"),
    ({"op": "vm-power", "vm": "vm-batch", "power": "running", "host": "host-9"}, "no host"),
    ({"op": "vm-power", "vm": "vm-batch", "power": "running"}, "no host"),
    ({"op": "vm-power", "vm": "vm-batch", "power": "halted", "host": "host-0000"},
     "on no host"),
    ({"op": "drop-tables"}, "unknown change"),
])
def test_bad_changes_are_refused_and_change_nothing(db: PoolDB, change: dict[str, Any],
                                                    says: str) -> None:
    before = to_data(db)
    with pytest.raises(PoolError, match=says):
        apply(db, change)
    assert to_data(db) == before


def test_vms_are_installed_halted_and_uninstalled_with_their_command(db: PoolDB) -> None:
    new = apply(db, {"op": "vm-install", "vm": "vm-new", "fields": {
        "name-label": "new", "memory": "300", "ha-restart-priority": "restart", "order": "2",
        "start-delay": "1.5"}})
    vm = new.pool.vm("vm-new")
    assert (vm.name, vm.memory, vm.priority, vm.order, vm.start_delay, vm.power,
            vm.resident) == ("new", 300, Priority.RESTART, 2, 1.5, Power.HALTED, None)
    gpu = apply(new, {"op": "vm-install", "vm": "vm-gpu", "fields": {
        "name-label": "gpu", "memory": "64", "devices": "gpu0, gpu1",
        "ha-restart-priority": "best-effort"}})
    assert gpu.pool.vm("vm-gpu").devices == ("gpu0", "gpu1")
    with_command = replace(gpu, commands={"vm-new": ("sleep", "9"), "vm-sql": ("true",)},
                           ready_commands={"vm-new": ("true",)})
    gone = apply(with_command, {"op": "vm-uninstall", "vm": "vm-new"})
    assert "vm-new" not in {v.uuid for v in gone.pool.vms}
    assert gone.commands == {"vm-sql": ("true",)} and gone.ready_commands == {}
    assert from_data(to_data(gpu)) == gpu  # the snapshot carries installed VMs


def test_readiness_by_command_only_where_the_pool_file_gave_one(db: PoolDB) -> None:
    for change in ({"op": "vm-set", "vm": "vm-sql", "fields": {"ready": "command"}},
                   {"op": "vm-install", "vm": "vm-new", "fields": {
                       "name-label": "new", "memory": "300", "ready": "command"}}):
        with pytest.raises(PoolError, match="ready=command needs its ready_command, which "
                                            "only the pool file declares"):
            apply(db, change)
    declared = replace(db, ready_commands={"vm-sql": ("pg_isready",)})
    checked = apply(declared, {"op": "vm-set", "vm": "vm-sql", "fields": {"ready": "command"}})
    assert checked.pool.vm("vm-sql").ready == "command"
    back = apply(checked, {"op": "vm-set", "vm": "vm-sql", "fields": {"ready": "file"}})
    assert back.pool.vm("vm-sql").ready == "file" and back.ready_commands == {
        "vm-sql": ("pg_isready",)}  # kept for a later ready=command


def test_vm_power_records_what_the_operator_did(db: PoolDB) -> None:
    halted = apply(db, {"op": "vm-power", "vm": "vm-batch", "power": "halted"})
    assert (halted.pool.vm("vm-batch").power, halted.pool.vm("vm-batch").resident) == (
        Power.HALTED, None)
    suspended = apply(db, {"op": "vm-power", "vm": "vm-sql", "power": "suspended"})
    assert suspended.pool.vm("vm-sql").power is Power.SUSPENDED  # protected: may suspend
    moved = apply(suspended, {"op": "vm-power", "vm": "vm-sql", "power": "running",
                              "host": "host-0002"})
    assert moved.pool.vm("vm-sql").resident == "host-0002"
    assert from_data(to_data(suspended)).pool.vm("vm-sql").power is Power.SUSPENDED
    unprotected = apply(db, {"op": "vm-set", "vm": "vm-sql",
                             "fields": {"ha-restart-priority": ""}})
    assert apply(unprotected, {"op": "vm-power", "vm": "vm-sql", "power": "halted"}
                 ).pool.vm("vm-sql").power is Power.HALTED


def test_a_change_that_breaks_the_plan_is_refused_while_ha_is_on(db: PoolDB) -> None:
    big_sql = replace(db.pool.vm("vm-sql"), memory=3400)
    db = replace(db, pool=db.pool.with_vm(big_sql))
    on = enabled(db)
    # three hosts of 3840 MiB free: one host cannot hold every protected VM
    bigger = {"op": "pool-set", "fields": {"ha-host-failures-to-tolerate": "2"}}
    with pytest.raises(PoolError, match=r"break the failover plan.*pool-ha-disable"):
        apply(on, bigger)
    assert apply(db, bigger).pool.host_failures_to_tolerate == 2  # HA off: allowed
    allowed = apply(on, {"op": "pool-set", "fields": {"ha-allow-overcommit": "true"}})
    assert apply(allowed, bigger).pool.host_failures_to_tolerate == 2
    # an already overcommitted pool still takes changes that do not ask for more
    over = replace(on, pool=replace(on.pool, host_failures_to_tolerate=2))
    assert apply(over, {"op": "vm-set", "vm": "vm-web1",
                        "fields": {"order": "2"}}).pool.vm("vm-web1").order == 2


def test_messages_are_numbered_and_capped(db: PoolDB) -> None:
    for i in range(KEEP_MESSAGES + 5):
        db = apply(db, {"op": "message", "name": "ha_host_failed", "priority": 2,
                        "obj": "host-0001", "body": f"#{i}", "time": 1.5 * i})
    assert len(db.messages) == KEEP_MESSAGES
    assert db.messages[-1].ref == KEEP_MESSAGES + 5 and db.messages[0].ref == 6
    assert [m.ref for m in db.messages_since(KEEP_MESSAGES + 3)] == [KEEP_MESSAGES + 4,
                                                                    KEEP_MESSAGES + 5]


def random_change(rng: random.Random, db: PoolDB) -> dict[str, Any]:
    vm = rng.choice(db.pool.vms).uuid
    return rng.choice([
        {"op": "vm-set", "vm": vm, "fields": {"order": str(rng.randrange(4))}},
        {"op": "vm-set", "vm": vm, "fields": {"ha-restart-priority":
                                              rng.choice(["restart", "best-effort", ""])}},
        {"op": "vm-set", "vm": vm, "fields": {"start-delay": str(rng.randrange(5))}},
        {"op": "pool-set", "fields": {"ha-host-failures-to-tolerate": str(rng.randrange(3))}},
        {"op": "pool-set", "fields": {f"other-config:k{rng.randrange(3)}":
                                      rng.choice(["", "v"])}},
        {"op": "master", "host": rng.choice(db.pool.hosts).uuid},
        {"op": "message", "name": "x", "priority": 3, "obj": vm, "body": "b",
         "time": rng.random()},
        {"op": "host-enabled", "host": rng.choice(db.pool.hosts).uuid,
         "enabled": rng.random() < 0.7},
        {"op": "vm-set", "vm": "vm-missing", "fields": {"order": "1"}},
    ])


@pytest.mark.parametrize("seed_", range(5))
def test_snapshot_plus_replay_gives_the_same_database(seed_: int) -> None:
    rng = random.Random(seed_)
    db = enabled(seed(default_pool(4)))
    snapshot, changes = to_data(db), []
    for _ in range(200):
        change = random_change(rng, db)
        try:
            db = apply(db, change)
        except PoolError:
            continue
        changes.append(change)
        if rng.random() < 0.1:
            snapshot, changes = to_data(db), []
    replayed = from_data(snapshot)
    for change in changes:
        replayed = apply(replayed, change)
    assert to_data(replayed) == to_data(db), f"seed {seed_}"
    assert replayed == db, f"seed {seed_}"


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("ha"), lambda d: d.update(messages=[[1, "x"]]),
    lambda d: d["pool"].update(vm=[{"uuid": "v"}]), lambda d: d.update(generation="g"),
])
def test_malformed_snapshots_are_refused(db: PoolDB, damage: Any) -> None:
    data = to_data(db)
    damage(data)
    with pytest.raises(PoolError):
        from_data(data)


AUDIT = {"time": 1.5, "credential": "cert:1a", "role": "operator", "name": "carol",
         "verb": "vm-param-set", "params": {"uuid": "vm-sql", "order": "2"}, "flags": []}


def test_an_audit_record_rides_on_its_change_and_survives_a_snapshot(db: PoolDB) -> None:
    new = apply(db, {"op": "vm-set", "vm": "vm-sql", "fields": {"order": "2"}, "audit": AUDIT})
    assert new.generation == db.generation + 1 and new.pool.vm("vm-sql").order == 2
    [record] = new.audit
    assert (record.ref, record.credential, record.verb, record.params) == (
        1, "cert:1a", "vm-param-set", (("order", "2"), ("uuid", "vm-sql")))
    alone = apply(new, {"op": "audit", "audit": {**AUDIT, "verb": "host-shutdown"}})
    assert [r.ref for r in alone.audit] == [1, 2] and alone.pool == new.pool
    assert from_data(to_data(alone)) == alone


@pytest.mark.parametrize("change", [
    {"op": "audit"},
    {"op": "audit", "audit": {**AUDIT, "params": ["x"]}},
    {"op": "audit", "audit": {**AUDIT, "credential": 7}},
    {"op": "vm-set", "vm": "vm-sql", "fields": {"order": "2"}, "audit": {"time": 1}},
])
def test_a_malformed_audit_record_refuses_the_change(db: PoolDB, change: Any) -> None:
    before = to_data(db)
    with pytest.raises(PoolError, match="audit"):
        apply(db, change)
    assert to_data(db) == before


def test_only_the_newest_audit_records_are_kept(db: PoolDB) -> None:
    for _ in range(KEEP_AUDIT + 5):
        db = apply(db, {"op": "audit", "audit": AUDIT})
    assert len(db.audit) == KEEP_AUDIT and db.audit[0].ref == 6
    assert db.audit_since(KEEP_AUDIT + 3)[0].ref == KEEP_AUDIT + 4


def test_the_deny_list(db: PoolDB) -> None:
    denied = apply(db, {"op": "credential-deny", "credential": "cert:1a"})
    assert denied.denied == {"cert:1a"}
    with pytest.raises(PoolError, match="already denied"):
        apply(denied, {"op": "credential-deny", "credential": "cert:1a"})
    with pytest.raises(PoolError, match="not on the deny list"):
        apply(denied, {"op": "credential-allow", "credential": "cert:2b"})
    with pytest.raises(PoolError, match="credential id"):
        apply(db, {"op": "credential-deny", "credential": ""})
    assert from_data(to_data(denied)) == denied
    assert apply(denied, {"op": "credential-allow", "credential": "cert:1a"}).denied == set()


def test_a_snapshot_from_before_the_audit_reads_without_one(db: PoolDB) -> None:
    data = to_data(db)
    del data["audit"], data["denied"]
    assert from_data(data) == db
