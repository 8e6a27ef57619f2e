"""The receive-path benchmark still runs (at a tiny size) and reports sane figures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..conftest import load_tool


def test_tiny_benchmark_reports_positive_figures_of_a_settled_pool(
        capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool("bench_receive")
    row = tool.measure(5, seed=3, packets=40, repeat=2)
    assert row.hosts == 5 and row.packets == (tool.rounds_for(5, 40) - 1) * 4
    assert min(row.open_us, row.decode_us, row.first_sight_us, row.core_us) > 0
    assert row.total_us == pytest.approx(row.open_us + row.decode_us + row.core_us)
    assert row.settled
    assert tool.main(["--hosts", "3,4", "--packets", "10", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "seed: 14" in out and "warning" not in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "hosts" not in line]
    assert [line.split("|")[1].strip() for line in rows] == ["3", "4"]


def test_the_benchmark_decodes_what_the_sealer_opens() -> None:
    tool = load_tool("bench_receive")
    timing = tool.Timing.derive(tool.TIMEOUT)
    (beat,) = tool.pool_reports(6, 1, seed=5, timing=timing)
    sealer = tool.Sealer.for_heartbeats(bytes(32), 6)
    for report in beat:
        packet = sealer.seal(report)
        assert tool.decode(sealer, tool.open_aead(sealer, packet)) == sealer.open(packet) == report


def test_a_revision_is_measured_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[2]
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                      capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    tool = load_tool("bench_receive")
    assert tool.main(["--hosts", "3", "--packets", "8", "--repeat", "1", "--against", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "before: HEAD, after: this tree" in out
    (row,) = [line for line in out.splitlines() if line.startswith("| 3 |")]
    assert row.count("→") == 5
