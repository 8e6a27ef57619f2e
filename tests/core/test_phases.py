"""The state machine as data: the transition table, its enforcement, the
invariants, and the diagram in docs/design.md generated from the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from hacluster.core import phases
from hacluster.core.events import HeartbeatReceived, Tick
from hacluster.core.messages import Phase
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.phases import (
    EDGES,
    FINAL,
    INITIAL,
    TRANSITIONS,
    IllegalTransition,
    InvariantViolation,
    Trigger,
)

from ..conftest import armed_core, report

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"


def test_design_doc_diagram_is_generated_from_the_table() -> None:
    text = DESIGN.read_text()
    assert phases.BEGIN_MARK in text and phases.END_MARK in text
    assert phases.replace_doc_block(text) == text, (
        "docs/design.md's phase diagram drifted from hacluster/core/phases.py: "
        "run `python tools/phase_diagram.py --write`")


def test_every_trigger_has_one_row_and_every_phase_is_reachable() -> None:
    assert sorted(t.trigger.value for t in TRANSITIONS) == sorted(t.value for t in Trigger)
    reached, todo = {INITIAL}, [INITIAL]
    while todo:
        here = todo.pop()
        for old, new in EDGES:
            if old is here and new not in reached:
                reached.add(new)
                todo.append(new)
    assert reached == set(Phase)


def test_final_phases_have_no_way_out() -> None:
    assert not [edge for edge in EDGES if edge[0] in FINAL]


def test_check_transition_refuses_an_edge_outside_the_table() -> None:
    with pytest.raises(IllegalTransition, match="NORMAL -> PROPOSED by propose"):
        phases.check_transition(Phase.NORMAL, Phase.PROPOSED, Trigger.PROPOSE, "test")
    with pytest.raises(IllegalTransition, match="allowed only by"):
        phases.check_transition(Phase.NORMAL, Phase.FENCED, Trigger.LOST, "test")
    phases.check_transition(Phase.PROPOSED, Phase.FENCED, Trigger.STALL, "test")


def test_core_refuses_a_phase_change_outside_the_table(config: CoreConfig) -> None:
    """A joiner is not armed: nothing may fence it (it has nothing to fence)."""
    core = HostCore(config, 1, boot=2, now=50.0)
    with pytest.raises(IllegalTransition, match="JOINING -> FENCED by stall"):
        core._fence("planted", Trigger.STALL)
    assert core.phase is Phase.JOINING


def test_a_planted_invariant_violation_raises_from_handle(config: CoreConfig) -> None:
    core = armed_core(config)
    core.handle(Tick(100.0))
    core._proposal = frozenset({0, 1})  # a proposal while NORMAL
    with pytest.raises(InvariantViolation, match="proposed-iff-proposal"):
        core.handle(Tick(100.1))


def test_a_fenced_master_is_no_master(config: CoreConfig) -> None:
    core = armed_core(config)
    core.handle(Tick(100.0))
    request = report(1, 1, phase=Phase.PROPOSED, proposal=frozenset({1, 2}))
    core.handle(HeartbeatReceived(100.1, request))
    assert core.phase is Phase.FENCED and not core.is_master
    core.is_master = True  # planted
    with pytest.raises(InvariantViolation, match="master-armed"):
        phases.check_invariants(core)
