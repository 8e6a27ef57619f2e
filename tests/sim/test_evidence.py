"""Every fault handler's commit carries its evidence: the views it decided on, the
survival rule, and why each removed host is gone by then (issue #15)."""

from __future__ import annotations

import pytest

from hacluster.core.node import Mode
from hacluster.sim.cluster import SimConfig, Simulation


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_a_crashed_hosts_removal_says_why_and_the_window_holds(mode: Mode) -> None:
    sim = Simulation(SimConfig(hosts=4, seed=11, timeout=5.0, mode=mode))
    sim.at(10.0, lambda: sim.crash(0))
    sim.run_until(40.0)
    removals = [(t, host, c) for t, host, c in sim.commits if 0 in c.removed]
    assert {host for _, host, _ in removals} == {1, 2, 3}, "every survivor commits it"
    for _, host, commit in removals:
        evidence = commit.evidence
        assert evidence is not None
        assert evidence.rule in ("quorum", "survival rule 1") or "rule" in evidence.rule
        assert evidence.decided_at <= evidence.committed_at
        assert {v.host for v in evidence.views} >= {host}
        mine = next(v for v in evidence.views if v.host == host)
        assert 0 not in mine.hbdomain  # gone from the decider's own view
        (removal,) = evidence.removals
        assert removal.host == 0 and removal.proof == "unseen"
        # the window arithmetic: unseen by every member for the proof window, and
        # last seen around the crash (a slot read after it still shows its last write)
        assert evidence.committed_at - removal.last_seen >= removal.window
        crash = sim.local(sim.hosts[host], 10.0)
        assert crash - sim.timing.T <= removal.last_seen <= crash + sim.timing.t2 + 0.5


def test_a_fenced_hosts_last_words_are_its_proof() -> None:
    """A host that loses the network but keeps the SR fences and says so: the
    survivors commit on its fence report, before its window runs out."""
    sim = Simulation(SimConfig(hosts=3, seed=4, timeout=5.0, mode=Mode.STATEFILE))
    sim.at(10.0, lambda: sim.isolate(2))
    sim.run_until(40.0)
    proofs = {(host, r.proof) for _, host, c in sim.commits if c.evidence is not None
              for r in c.evidence.removals}
    assert proofs and all(proof in ("fence report", "unseen") for _, proof in proofs)
    assert ("fence report" in {p for _, p in proofs}) or sim.fenced() == {2}
