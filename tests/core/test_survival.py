"""The pure survival decision (spec section 5)."""

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster.core.survival import (
    View,
    cold_start_quorum,
    decide_clustered,
    decide_statefile,
    largest_partition,
    quorate,
)

ALL5 = frozenset(range(5))


def partitioned_views(groups: list[set[int]], statefile: set[int] | None = None) -> dict[int, View]:
    hosts = set().union(*groups)
    access = hosts if statefile is None else statefile
    views = {}
    for group in groups:
        for h in group:
            views[h] = View(frozenset(group), frozenset(access), h in access)
    return views


def test_crash_survivors_keep_each_other_by_rule_1() -> None:
    views = partitioned_views([{0, 1, 2}])
    decision = decide_statefile(0, frozenset({0, 1, 2, 3}), views)
    assert decision.survive and decision.rule == "survival rule 1"
    assert decision.liveset == {0, 1, 2}


def test_larger_side_wins_even_without_the_lowest_index() -> None:
    views = partitioned_views([{0, 1}, {2, 3, 4}])
    assert not decide_statefile(0, ALL5, views).survive
    assert decide_statefile(3, ALL5, views).liveset == {2, 3, 4}


def test_even_split_keeps_the_lowest_index_side() -> None:
    views = partitioned_views([{0, 1}, {2, 3}, {4}])
    assert decide_statefile(1, ALL5, views).liveset == {0, 1}
    assert not decide_statefile(2, ALL5, views).survive
    two = partitioned_views([{0}, {1}])
    assert decide_statefile(0, frozenset({0, 1}), two).survive
    assert not decide_statefile(1, frozenset({0, 1}), two).survive


def test_host_without_statefile_loses_while_others_keep_it() -> None:
    views = partitioned_views([{0, 1, 2}], statefile={0, 1})
    decision = decide_statefile(2, frozenset({0, 1, 2}), views)
    assert not decision.survive
    assert "statefile" in decision.rule


def test_rule_2_when_the_whole_pool_lost_the_statefile() -> None:
    views = partitioned_views([{0, 1, 2}], statefile=set())
    decision = decide_statefile(1, frozenset({0, 1, 2}), views)
    assert decision.survive and decision.rule2
    assert decision.liveset == {0, 1, 2}


def test_rule_2_needs_every_liveset_host_heard() -> None:
    views = partitioned_views([{0, 1}, {2}], statefile=set())
    assert not decide_statefile(0, frozenset({0, 1, 2}), views).survive


def test_rule_2_needs_every_host_to_have_lost_the_statefile() -> None:
    views = partitioned_views([{0, 1, 2}], statefile={0})
    decision = decide_statefile(1, frozenset({0, 1, 2}), views)
    assert not decision.survive


def test_one_way_link_drops_the_highest_index_of_the_broken_pair() -> None:
    # host 0 no longer hears host 2 (mutual links only count)
    views = {
        0: View(frozenset({0, 1}), frozenset({0, 1, 2}), True),
        1: View(frozenset({0, 1, 2}), frozenset({0, 1, 2}), True),
        2: View(frozenset({1, 2}), frozenset({0, 1, 2}), True),
    }
    assert decide_statefile(1, frozenset({0, 1, 2}), views).liveset == {0, 1}


def test_clustered_quorum_rules() -> None:
    assert quorate(frozenset({2, 3, 4}), ALL5, 5)
    assert not quorate(frozenset({0, 1}), ALL5, 5)
    four = frozenset(range(4))
    assert quorate(frozenset({0, 1}), four, 4)
    assert not quorate(frozenset({2, 3}), four, 4)
    assert cold_start_quorum(4) == 3 and cold_start_quorum(5) == 3
    views = partitioned_views([{0, 1}, {2, 3}])
    assert decide_clustered(0, four, 4, views).survive
    lost = decide_clustered(2, four, 4, views)
    assert not lost.survive


@settings(max_examples=300, derandomize=True, database=None)
@given(st.integers(2, 9), st.integers(0, 2**32))
def test_clean_partitions_keep_the_largest_lowest_group(hosts: int, seed: int) -> None:
    """Against brute force: with disjoint cliques, the winner is the largest group,
    ties to the group holding the lowest index."""
    rng = random.Random(seed)
    labels = [rng.randrange(3) for _ in range(hosts)]
    groups = [{h for h in range(hosts) if labels[h] == g} for g in range(3)]
    groups = [g for g in groups if g]
    views = partitioned_views(groups)
    expected = min(groups, key=lambda g: (-len(g), min(g)))
    got = largest_partition(frozenset(range(hosts)), {h: v.hbdomain for h, v in views.items()})
    assert got == expected, f"seed={seed}"


@settings(max_examples=300, derandomize=True, database=None)
@given(st.integers(1, 8), st.integers(0, 2**32))
def test_largest_partition_is_always_a_clique_and_deterministic(hosts: int, seed: int) -> None:
    rng = random.Random(seed)
    hb = {h: frozenset({h} | {p for p in range(hosts) if rng.random() < 0.6}) for h in range(hosts)}
    got = largest_partition(frozenset(range(hosts)), hb)
    for a, b in itertools.combinations(got, 2):
        assert b in hb[a] and a in hb[b], f"seed={seed}"
    assert got == largest_partition(frozenset(range(hosts)), dict(reversed(hb.items())))
    assert got, f"seed={seed}: a non-empty candidate set always keeps someone"
