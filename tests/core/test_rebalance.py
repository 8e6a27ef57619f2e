"""Rebalancing: VMs go back to their homes one at a time, never breaking the plan."""

from __future__ import annotations

import random

import pytest

from hacluster.core.pool import SR, VM, Host, Pool, Power, Priority
from hacluster.core.rebalance import Move, homes, moved, moves, next_move
from hacluster.core.recovery import tolerance

RESTART, BEST_EFFORT, NONE = Priority.RESTART, Priority.BEST_EFFORT, Priority.NONE


def vm(name: str, on: str, memory: int = 500, priority: Priority = RESTART,
       order: int = 0) -> VM:
    return VM(name, name, memory, priority, order, 0.0, Power.RUNNING, on)


def pool(vms: list[VM], memory: tuple[int, ...] = (4000, 4000, 4000), nft: int = 1) -> Pool:
    hosts = tuple(Host(f"h{i}", f"h{i}", m) for i, m in enumerate(memory))
    return Pool(hosts, tuple(vms), host_failures_to_tolerate=nft)


def test_vms_go_home_protected_first_then_by_order_then_name() -> None:
    # h1 failed: HA restarted its VMs on h0 and h2; now h1 is back
    view = pool([vm("web", "h0", order=1), vm("db", "h2"), vm("batch", "h0",
                                                             priority=BEST_EFFORT),
                 vm("scratch", "h2", priority=NONE), vm("dns", "h0", order=1)])
    home = {"web": "h1", "db": "h1", "batch": "h1", "scratch": "h1", "dns": "h1"}
    assert moves(view, home, None) == [Move("db", "h2", "h1"), Move("dns", "h0", "h1"),
                                       Move("web", "h0", "h1"), Move("batch", "h0", "h1")]


def test_the_home_is_where_the_database_records_a_vm() -> None:
    recorded = pool([vm("a", "h1"), replace_power(vm("b", "h2"))])
    assert homes(recorded) == {"a": "h1"}


def replace_power(v: VM) -> VM:
    return VM(v.uuid, v.name, v.memory, v.priority, v.order)


def test_a_home_that_is_down_full_or_disabled_is_skipped_not_waited_for() -> None:
    view = pool([vm("a", "h0", memory=3000), vm("b", "h0"), vm("c", "h0"),
                 vm("x", "h1", memory=3900, priority=NONE)])
    home = {"a": "h2", "b": "h1", "c": "h2"}
    # b's home h1 has 100 MiB free: b stays, a and c go home
    assert moves(view, home, None) == [Move("a", "h0", "h2"), Move("c", "h0", "h2")]
    assert moves(view, home, frozenset({"h0", "h1"})) == []  # h2 is down
    disabled = Pool(tuple(Host(h.uuid, h.name, h.memory_total, enabled=h.uuid != "h2")
                          for h in view.hosts), view.vms, host_failures_to_tolerate=1)
    assert moves(disabled, home, None) == []


def test_a_move_that_would_leave_the_plan_short_is_skipped() -> None:
    # h0: v1 (700, protected) and v0 (500); h2: v3 (500, protected) and v2 (500); h1 empty.
    # v3 home on h1 would leave no host with 700 MiB free for v1 if h0 fails.
    view = pool([vm("v0", "h0", priority=NONE), vm("v1", "h0", memory=700),
                 vm("v2", "h2", priority=NONE), vm("v3", "h2")], memory=(2000, 1000, 1000))
    assert tolerance(view, None).max_failures == 1
    assert next_move(view, {"v3": "h1"}, None) is None
    # with the plan already short, a move that keeps what it covers is allowed
    short = Pool(view.hosts, view.vms, host_failures_to_tolerate=2)
    assert next_move(short, {"v3": "h1"}, None) is None  # 1 -> 0: worse, refused
    assert next_move(short, {"v1": "h1"}, None) == Move("v1", "h0", "h1")


def test_a_vm_that_is_not_agile_stays() -> None:
    local = SR("local", "local", shared=False, plugged=frozenset({"h0"}))
    pinned = VM("p", "p", 500, RESTART, 0, 0.0, Power.RUNNING, "h0", disks=("local",))
    view = Pool(pool([]).hosts, (pinned,), (local,), host_failures_to_tolerate=1)
    assert moves(view, {"p": "h1"}, None) == []


@pytest.mark.parametrize("seed", range(40))
def test_every_planned_move_keeps_the_plan_and_moves_each_vm_once(seed: int) -> None:
    rng = random.Random(seed)
    hosts = tuple(Host(f"h{i}", f"h{i}", rng.choice([1000, 1500, 2000])) for i in range(4))
    vms: list[VM] = []
    for k in range(rng.randint(2, 7)):
        room = [h.uuid for h in hosts
                if h.memory_total - sum(v.memory for v in vms if v.resident == h.uuid) >= 700]
        if room:
            vms.append(vm(f"v{k}", rng.choice(room), rng.choice([300, 500, 700]),
                          rng.choice([RESTART, RESTART, BEST_EFFORT, NONE]), rng.randint(0, 2)))
    view = Pool(hosts, tuple(vms), host_failures_to_tolerate=rng.randint(0, 2))
    home = {v.uuid: rng.choice(hosts).uuid for v in vms}
    live = frozenset(h.uuid for h in hosts if rng.random() < 0.9)
    planned = moves(view, home, live)
    print(f"seed {seed}: {len(planned)} move(s)")
    assert len({m.vm for m in planned}) == len(planned), f"seed {seed}: a VM moved twice"
    for move in planned:
        need = min(view.host_failures_to_tolerate, tolerance(view, live).max_failures)
        target_vm = view.vm(move.vm)
        assert move.target == home[move.vm] and move.source == target_vm.resident
        assert target_vm.priority in (RESTART, BEST_EFFORT) and move.target in live
        assert view.free_memory(move.target) >= target_vm.memory, f"seed {seed}"
        view = moved(view, target_vm, move.target)
        assert tolerance(view, live).max_failures >= need, f"seed {seed}: {move} broke the plan"
