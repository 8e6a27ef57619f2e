"""Safety margins: how close this node runs to the limits its liveness depends on.

Rules:

* A margin is a measured figure beside the limit it must stay under, for a
  timing (the running one, or one proposed for a new T): the gap between
  two heartbeats of a peer on a network against T1 (a gap of T1 is a false
  suspicion), slot write and read latency against the I/O deadline (past
  it, a write counts as failed), the liveness loop's lag against the stall
  limit (past it, the host fences itself on waking). The main loop's lag is
  shown against the stall limit too, as a guide: it holds no deadline.
* Each is judged on its p99 and its worst: ``used`` is the worst over the
  limit (0.5 means half the limit gone). :data:`LOW` and above is low: the
  node raises ``ha_margin_low`` (at most once per figure per
  :data:`ALERT_EVERY`), before the margin runs out and causes a false fence.
* Figures come from the node's status (:mod:`hacluster.node.measure`), so a
  margin is never measured anew for the asking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hacluster.core.timing import Timing

LOW = 0.5  # of a limit used: the margin is low
ALERT_EVERY = 3600.0  # seconds between two alerts about the same figure


def margins(status: Mapping[str, Any], timing: Timing) -> list[dict[str, Any]]:
    """Every margin of one node's status under ``timing``, least margin first."""
    measured = status.get("measured", {})
    rows = []
    for key, what, limit, name in (
            ("slot_write", "slot write latency", timing.io_deadline, "io_deadline"),
            ("slot_read", "slot read latency", timing.io_deadline, "io_deadline"),
            ("liveness_lag", "liveness loop lag", timing.stall_limit, "stall limit"),
            ("main_lag", "main loop lag (a guide)", timing.stall_limit, "stall limit")):
        if key in measured and measured[key]["count"]:
            rows.append(_row(what, measured[key], limit, name))
    for peer_network, figures in sorted(status.get("heartbeat_gaps", {}).items()):
        if figures["count"]:
            peer, network = peer_network.split("/")
            rows.append(_row(f"heartbeat gap from host {peer} on network {network}", figures,
                             timing.T1, "T1"))
    return sorted(rows, key=lambda row: -row["used"])


def _row(what: str, figures: Mapping[str, Any], limit: float, name: str) -> dict[str, Any]:
    worst = figures["max"]
    return {"what": what, "p99": figures["p99"], "worst": worst, "limit": limit,
            "limit_name": name, "used": round(worst / limit, 3) if limit > 0 else 1.0,
            "low": limit <= 0 or worst >= LOW * limit}


class MarginAlerts:
    """Which low margins to alert about now: each figure at most once per :data:`ALERT_EVERY`."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def due(self, rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            if row["low"] and now - self.last.get(row["what"], -ALERT_EVERY) >= ALERT_EVERY:
                self.last[row["what"]] = now
                out.append(row)
        return out
