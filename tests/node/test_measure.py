"""What the node measures for its metrics: samples, quantiles, loop lag, fault timelines."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from hacluster.node.measure import TIMELINE_STEPS, FaultTimeline, LoopLag, Samples


def test_quantiles_are_nearest_rank_over_the_window() -> None:
    samples = Samples(window=100)
    assert samples.quantile(0.5) is None  # nothing yet: no made-up zero
    values = list(range(1, 101))
    random.Random(5).shuffle(values)
    for value in values:
        samples.add(value / 1000)
    assert samples.quantile(0.5) == 0.05
    assert samples.quantile(0.99) == 0.099
    assert samples.quantile(1.0) == 0.1
    summary = samples.summary()
    assert (summary["count"], summary["max"], summary["p50"]) == (100, 0.1, 0.05)
    assert summary["sum"] == pytest.approx(5.05)
    with pytest.raises(ValueError, match="quantile"):
        samples.quantile(0)


def test_the_window_forgets_old_values_but_the_totals_do_not() -> None:
    samples = Samples(window=10)
    for _ in range(50):
        samples.add(5.0)
    for _ in range(10):
        samples.add(0.001)
    assert samples.quantile(0.99) == 0.001  # the old stall left the window
    assert samples.largest == 5.0 and samples.count == 60


def test_a_fault_timeline_keeps_the_last_fault_in_order_and_bounded() -> None:
    clock = iter(float(t) for t in range(1000))
    timeline = FaultTimeline(lambda: next(clock))
    assert timeline.view() is None
    timeline.step("ignored: no fault under way")
    timeline.began("NORMAL -> STABILIZING")
    timeline.step("STABILIZING -> AGREEING")
    timeline.end("PROPOSED -> NORMAL")
    view = timeline.view()
    assert view is not None
    assert [s["text"] for s in view["steps"]] == ["NORMAL -> STABILIZING",
                                                  "STABILIZING -> AGREEING",
                                                  "PROPOSED -> NORMAL"]
    assert view["ended"] == view["steps"][-1]["time"] + 1
    timeline.began("NORMAL -> STABILIZING again")
    for n in range(100):
        timeline.step(f"step {n}")
    view = timeline.view()
    assert view is not None and view["ended"] is None
    assert len(view["steps"]) == TIMELINE_STEPS
    assert view["steps"][0]["text"] == "NORMAL -> STABILIZING again"


async def test_loop_lag_sees_a_blocked_loop() -> None:
    lag = LoopLag(every=0.02)
    task = asyncio.ensure_future(lag.run())
    await asyncio.sleep(0.1)
    time.sleep(0.3)  # the loop is stuck: the probe wakes late
    await asyncio.sleep(0.05)
    task.cancel()
    assert lag.samples.largest >= 0.25
    assert lag.samples.count >= 3


def test_a_copy_is_the_same_figures_and_does_not_follow_the_original() -> None:
    samples = Samples(window=4)
    for value in (0.1, 0.4, 0.2):
        samples.add(value)
    twin = samples.copy()
    samples.add(9.0)
    assert twin.summary() == {"count": 3, "sum": 0.7, "max": 0.4, "p50": 0.2, "p99": 0.4}
    assert samples.summary()["max"] == 9.0 and twin.recent.maxlen == 4
