"""Timing derivation and validation (spec section 4)."""

from dataclasses import replace

import pytest

from hacluster.core.timing import Timing, TimingError


@pytest.mark.parametrize("timeout", [1.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0])
def test_derived_sets_satisfy_every_rule(timeout: float) -> None:
    timing = Timing.derive(timeout)
    timing.validate()
    assert timing.T1 == timing.T2 == timeout
    # every timeout spans about ten beats
    assert timing.T1 / timing.t1 >= 10
    assert timing.T2 / timing.t2 >= 10
    # the lease is the timeout: unseen for T1 means out of lease, give or take a beat
    assert timing.lease == min(timing.T1, timing.T2)
    assert timing.fence_window >= (
        timing.lease - min(timing.T1, timing.T2) + max(timing.t1, timing.t2)
    )


def test_reference_intervals_are_kept_for_large_timeouts() -> None:
    timing = Timing.derive(60)
    assert timing.t1 == 3.0
    assert timing.t2 == 3.0


def test_small_timeouts_are_allowed_and_fast() -> None:
    timing = Timing.derive(3)
    assert timing.t1 == pytest.approx(0.3)
    assert timing.fence_window < 0.15 * timing.T  # 0.36 s (3.71 s before leases)


@pytest.mark.parametrize("timeout", [0.0, -5.0, 0.5, float("nan")])
def test_timeout_below_floor_is_rejected(timeout: float) -> None:
    with pytest.raises(TimingError) as caught:
        Timing.derive(timeout)
    assert caught.value.rule == "timeout-floor"


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"t1": 0.0}, "positive"),
        ({"t1": 2.0}, "beats-per-timeout"),
        ({"t2": 2.0}, "beats-per-timeout"),
        ({"io_deadline": 3.0}, "io-deadline"),
        ({"agree": 6.0}, "agreement-bound"),
        ({"agree": 0.5}, "agreement-rounds"),
        ({"lease": 1.0}, "lease-spans-beats"),
        ({"lease": 6.0}, "safety-inequality"),  # a longer lease needs a longer window
        ({"fence_window": 0.3}, "safety-inequality"),
        ({"drift": 0.5}, "drift-bound"),
    ],
)
def test_inconsistent_sets_name_the_violated_rule(change: dict[str, float], rule: str) -> None:
    broken = replace(Timing.derive(5.0), **change)
    with pytest.raises(TimingError) as caught:
        broken.validate()
    assert caught.value.rule == rule
    assert rule in str(caught.value)


@pytest.mark.parametrize("timeout", [1.0, 3.0, 60.0, 3600.0])
def test_every_rule_of_a_derived_set_holds_with_its_margin(timeout: float) -> None:
    rules = Timing.derive(timeout).rules()
    assert {r.name for r in rules} >= {"safety-inequality", "timeout-floor", "io-deadline"}
    for rule in rules:
        assert rule.holds and rule.margin >= 0, rule
        assert rule.op in rule.formula and rule.left_text in rule.formula


@pytest.mark.parametrize(
    ("change", "rule"),
    [({"t1": 0.0}, "positive"), ({"io_deadline": 3.0}, "io-deadline"),
     ({"lease": 1.0}, "lease-spans-beats"),
     ({"fence_window": 0.3}, "safety-inequality"), ({"t2": float("nan")}, "positive")],
)
def test_the_rule_validate_names_is_the_first_with_no_margin(change: dict[str, float],
                                                             rule: str) -> None:
    broken = replace(Timing.derive(5.0), **change)
    failing = [r for r in broken.rules() if not r.holds]
    assert failing and failing[0].name == rule
    assert not failing[0].margin > 0  # negative, or zero for a strict rule (or NaN)
    with pytest.raises(TimingError) as caught:
        broken.validate()
    assert caught.value.rule == rule and str(failing[0]) in str(caught.value)
