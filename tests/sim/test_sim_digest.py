"""The run digests: the same seed digests alike, another seed or a changed decision not."""

from __future__ import annotations

import pytest

from ..conftest import load_tool


def test_a_schedule_digests_alike_run_after_run_and_unlike_another_seed() -> None:
    tool = load_tool("sim_digest")
    first = list(tool.schedule_lines(3, 2, 11, tool.Mode.STATEFILE, 5.0))
    again = list(tool.schedule_lines(3, 2, 11, tool.Mode.STATEFILE, 5.0))
    assert first == again and len(first) == 2
    assert first[0].split("sha256=")[1] != first[1].split("sha256=")[1]
    assert "violations=0" in first[0] and "events=" in first[0]


def test_a_changed_decision_changes_the_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = load_tool("sim_digest")
    before = list(tool.schedule_lines(3, 1, 11, tool.Mode.CLUSTERED, 5.0))
    monkeypatch.setattr(tool.Simulation, "_send", lambda *args: None)  # no heartbeat arrives
    after = list(tool.schedule_lines(3, 1, 11, tool.Mode.CLUSTERED, 5.0))
    assert before != after
