"""Chaos schedules are pure functions of their seed, with meaningful faults."""

from __future__ import annotations

import itertools

import pytest

from hacluster.chaos.schedule import KINDS, MASTER, MIN_GAP, OPERATIONS, Fault, schedule
from hacluster.core.timing import Timing


def take(backend: str, seed: int, count: int = 200, hosts: int = 3,
         timeout: float = 3.0, rate: float = 4.0) -> list[Fault]:
    return list(itertools.islice(schedule(backend, hosts, timeout, seed, rate), count))


@pytest.mark.parametrize("backend", sorted(KINDS))
def test_same_seed_same_faults_other_seed_others(backend: str) -> None:
    assert take(backend, 7) == take(backend, 7)
    assert take(backend, 7) != take(backend, 8)


@pytest.mark.parametrize("backend", sorted(KINDS))
def test_every_fault_of_the_backend_and_no_other(backend: str) -> None:
    faults = take(backend, 1, 400)
    assert {f.kind for f in faults} == set(KINDS[backend]) | set(OPERATIONS)
    share = sum(f.operation for f in faults) / len(faults)
    assert 0.15 < share < 0.35, share  # one draw in four is an operator's operation


def test_holds_follow_the_timing() -> None:
    timing = Timing.derive(3.0)
    watchdog = timing.lease
    faults = take("netns", 11, 600) + take("docker", 11, 600)
    pauses = [f.hold for f in faults if f.kind == "pause"]
    # a pause either rides through (below the stall limit) or outlasts the watchdog
    assert all(h < timing.stall_limit or h > watchdog for h in pauses)
    assert any(h < timing.stall_limit for h in pauses) and any(h > watchdog for h in pauses)
    assert all(f.hold < timing.stall_limit for f in faults if f.kind == "freeze")
    cuts = [f for f in faults if f.kind in ("partition", "one-way", "storage", "disconnect")]
    assert all(f.hold > timing.T for f in cuts)
    assert all(f.gap >= MIN_GAP for f in faults)


def test_targets_and_groups_are_valid() -> None:
    for fault in take("netns", 5, 500, hosts=5):
        assert fault.target == MASTER or 0 <= int(fault.target) < 5
        if fault.kind == "partition":
            hosts = sorted(h for g in fault.groups for h in g)
            assert hosts == list(range(5)) and 2 <= len(fault.groups) <= 3
        if fault.kind == "one-way":
            assert fault.peer is not None and fault.peer != fault.target
        if fault.kind == "storage":
            assert fault.mode in ("error", "hang", "slow")
    assert any(f.target == MASTER for f in take("netns", 5, 100))


def test_mean_gap_follows_the_rate() -> None:
    gaps = [f.gap for f in take("netns", 3, 2000, rate=6.0)]
    assert 8.0 < sum(gaps) / len(gaps) < 12.0  # 60 / rate = 10 s


@pytest.mark.parametrize("args, message", [
    (("vmware", 3, 3.0, 1, 4.0), "unknown backend"),
    (("netns", 1, 3.0, 1, 4.0), "two hosts"),
    (("netns", 3, 3.0, 1, 0.0), "rate"),
])
def test_bad_parameters_are_refused(args: tuple[str, int, float, int, float],
                                    message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next(schedule(*args))


def test_describe_names_the_resolved_target() -> None:
    assert Fault("kill", MASTER, 2.0).describe(1) == "kill host 1, back after 2.0s"
    assert Fault("kill", MASTER, 2.0).describe() == "kill the master, back after 2.0s"
    assert Fault("partition", 0, 4.0, groups=((0,), (1, 2))).describe(0) == \
        "partition 0 | 1,2 for 4.0s"
    assert Fault("one-way", 2, 4.0, peer=0).describe(2) == "host 0 deaf to host 2 for 4.0s"
    assert Fault("migrate", MASTER, vm=3).describe(1) == "migrate protected VM #3 to host 1"
    assert Fault("suspend", 0, 1.5, vm=2).describe(0) == \
        "suspend protected VM #2 for 1.5s, then resume it"
