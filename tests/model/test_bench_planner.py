"""Smoke test of the planner benchmark: it runs, prints its rows, and its
reference baseline is a real answer (checked against brute force on a pool
small enough for the reference to be exhaustive)."""

from __future__ import annotations

import pytest

from hacluster.core.planner import Problem
from hacluster.core.tolerance import max_failures
from hacluster.model.synthetic import random_pool

from ..conftest import load_tool

bench_planner = load_tool("bench_planner")


def test_benchmark_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_planner.main(["--pools", "8:60", "--fills", "0.9", "--dense", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| 8 |")]
    assert len(rows) == 4, out
    assert all(" exact" in row or " bound" in row for row in rows)


def test_exhaustive_reference_agrees_with_ours_on_a_small_pool() -> None:
    problem = Problem.from_pool(random_pool(6, 30, seed=4, fill=0.9))
    ours = max_failures(problem)
    assert ours.exact
    # 6 hosts: every nPr < 3500, so the reference enumerates; best-fit is
    # exact on these few VMs, so the two must agree
    assert bench_planner.reference_max_failures(problem) == ours.max_failures
