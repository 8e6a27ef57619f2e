"""The simulator benchmark still runs (at a tiny size) and reports sane figures."""

from __future__ import annotations

import pytest

from ..conftest import load_tool


def test_tiny_benchmark_reports_positive_figures(capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool("bench_sim")
    row = tool.measure(3, sim_seconds=2.0, schedules=1, seed=3)
    assert row.sim_per_wall > 0 and row.events_per_wall > 0
    assert row.schedules_per_minute > 0 and row.schedule_sim_seconds > 0
    assert tool.main(["--hosts", "3,4", "--sim-seconds", "1", "--schedules", "0"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "hosts" not in line]
    assert [line.split("|")[1].strip() for line in rows] == ["3", "4"]


def test_settle_benchmark_measures_every_episode_within_its_bound(
        capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool("bench_settle")
    ratios = tool.measure(3, tool.Mode.STATEFILE, schedules=2, seed=7)
    assert len(ratios) >= 2 and all(0 <= r <= 1 for r in ratios)
    assert tool.main(["--hosts", "3", "--schedules", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "mode" not in line]
    assert [line.split("|")[1].strip() for line in rows] == ["statefile", "clustered"]
