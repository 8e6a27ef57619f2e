"""Evidence records: why a liveset changed and why a VM was started where it was,
as plain data for the event log, the status and ``hactl ha-explain``.

Rules:

* A commit's record (:func:`evidence_record`) holds the liveset before and
  after, the rule the survival decision applied, every view it read (each
  host's network and statefile domains), and for each removed host its proof
  with the fence-window arithmetic: last sighting (by whom), the window, the
  commit time and the margin between them. Times are wall-clock seconds
  (``offset`` turns the core's monotonic clock into them), so records from
  different hosts and other logs line up.
* :class:`EvidenceBook` keeps the newest :data:`KEPT` records of each kind in
  memory, for the status and the master's answer to ``ha-explain``; the event
  log keeps them all.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hacluster.core.events import LivesetCommitted

KEPT = 32  # records of each kind a node keeps in memory


def evidence_record(commit: LivesetCommitted, offset: float) -> dict[str, Any]:
    """``commit`` and its evidence as a record (``offset``: wall time less core time)."""
    evidence = commit.evidence
    assert evidence is not None
    before = sorted(commit.liveset | commit.removed)
    return {
        "kind": "commit",
        "time": round(evidence.committed_at + offset, 3),
        "liveset_before": before,
        "liveset": sorted(commit.liveset),
        "removed": sorted(commit.removed),
        "rule": evidence.rule,
        "decided": round(evidence.decided_at + offset, 3),
        "views": [{"host": v.host, "hbdomain": sorted(v.hbdomain),
                   "sfdomain": sorted(v.sfdomain), "statefile_access": v.statefile_access}
                  for v in evidence.views],
        "removals": [{"host": r.host, "proof": r.proof,
                      "last_seen": round(r.last_seen + offset, 3)
                      if r.last_seen != float("-inf") else None,
                      "seen_by": r.seen_by, "window": r.window,
                      "unseen_for": round(evidence.committed_at - r.last_seen, 3)
                      if r.last_seen != float("-inf") else None}
                     for r in evidence.removals],
    }


class EvidenceBook:
    """The newest commit and restart records seen here."""

    def __init__(self) -> None:
        self.commits: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self.restarts: deque[dict[str, Any]] = deque(maxlen=KEPT)

    def records(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Every kept record from ``since`` (wall time) on, oldest first."""
        return sorted((r for r in (*self.commits, *self.restarts) if r["time"] >= since),
                      key=lambda r: r["time"])
