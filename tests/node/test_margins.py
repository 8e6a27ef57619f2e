"""Safety margins: measured figures beside the limits they must stay under."""

from __future__ import annotations

from typing import Any

from hacluster.core.timing import Timing
from hacluster.node.margins import ALERT_EVERY, MarginAlerts, margins


def figures(worst: float, p99: float | None = None, count: int = 10) -> dict[str, Any]:
    return {"count": count, "sum": worst, "max": worst, "p50": p99, "p99": p99 or worst}


STATUS = {"measured": {"slot_write": figures(0.02), "slot_read": figures(0.2),
                       "liveness_lag": figures(0.01), "main_lag": figures(0.0, count=0)},
          "heartbeat_gaps": {"2/0": figures(0.4), "1/0": figures(2.9)}}


def test_each_figure_is_judged_against_its_limit_worst_first() -> None:
    timing = Timing.derive(3.0)  # io_deadline 0.3, stall limit 1.5, T1 3
    rows = margins(STATUS, timing)
    assert [r["what"] for r in rows] == [
        "heartbeat gap from host 1 on network 0",  # 2.9 of 3: 97 %
        "slot read latency",                        # 0.2 of 0.3: 67 %
        "heartbeat gap from host 2 on network 0",   # 0.4 of 3
        "slot write latency", "liveness loop lag"]  # main lag: nothing measured yet
    assert [r["low"] for r in rows] == [True, True, False, False, False]
    assert rows[0]["limit_name"] == "T1" and rows[0]["used"] == round(2.9 / 3, 3)
    assert rows[1]["limit"] == timing.io_deadline


def test_a_proposed_timeout_changes_the_verdict() -> None:
    relaxed = margins(STATUS, Timing.derive(30.0))
    assert not any(r["low"] for r in relaxed)  # at T = 30 the same figures are fine


def test_a_low_margin_is_alerted_once_an_hour() -> None:
    alerts = MarginAlerts()
    rows = margins(STATUS, Timing.derive(3.0))
    first = alerts.due(rows, now=100.0)
    assert {r["what"] for r in first} == {"heartbeat gap from host 1 on network 0",
                                          "slot read latency"}
    assert alerts.due(rows, now=100.0 + ALERT_EVERY - 1) == []
    assert len(alerts.due(rows, now=100.0 + ALERT_EVERY)) == 2
