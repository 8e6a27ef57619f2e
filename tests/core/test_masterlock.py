"""Master lock votes (spec section 6)."""

from hacluster.core.masterlock import choose_grant, holds_lock

L = frozenset({0, 1, 2})


def test_lowest_requester_gets_the_grant_when_nobody_holds() -> None:
    assert choose_grant(L, frozenset({1, 2}), {0: None, 1: 2, 2: 1}) == 1


def test_sitting_holder_keeps_the_grant_when_a_lower_host_requests() -> None:
    grants = {0: 1, 1: 1, 2: 1}
    assert choose_grant(L, frozenset({0, 1, 2}), grants) == 1


def test_holder_that_left_the_liveset_loses_its_grants() -> None:
    grants = {1: 0, 2: 0}
    assert choose_grant(frozenset({1, 2}), frozenset({1, 2}), grants) == 1


def test_holding_needs_every_liveset_member() -> None:
    assert holds_lock(0, L, {0: 0, 1: 0, 2: 0})
    assert not holds_lock(0, L, {0: 0, 1: 0})
    assert not holds_lock(0, L, {0: 0, 1: 0, 2: 1})
    assert not holds_lock(3, L, {0: 3, 1: 3, 2: 3})


def test_no_requester_no_grant() -> None:
    assert choose_grant(L, frozenset(), {}) is None
