"""A daemon whose liveness core breaks its own rules fences at once."""

from __future__ import annotations

from hacluster.core.events import Tick
from hacluster.core.node import CoreConfig
from hacluster.node.liveness import handle_or_fence

from ..conftest import armed_core


def test_a_violated_invariant_fences_instead_of_running_on(config: CoreConfig) -> None:
    core = armed_core(config)
    fenced: list[str] = []
    assert handle_or_fence(core, Tick(100.0), fenced.append)  # outputs, no fence
    assert fenced == []
    core._proposal = frozenset({0, 1})  # planted: a proposal while NORMAL
    assert handle_or_fence(core, Tick(100.1), fenced.append) is None
    assert len(fenced) == 1
    assert fenced[0].startswith("the liveness core broke its own rules: ")
    assert "proposed-iff-proposal" in fenced[0]
