"""The hacluster command line, as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hacluster.cli import main
from hacluster.sim.scenarios import SCENARIOS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hacluster", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_simulate_ends_with_the_summary_line() -> None:
    done = run("simulate", "--hosts", "4", "--schedules", "6", "--seed", "42", "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "schedules: 6 violations: 0"


def test_simulate_clustered_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--hosts", "5", "--schedules", "3", "--mode", "clustered",
                 "--jobs", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "mode=clustered" in out and out.strip().endswith("schedules: 3 violations: 0")


def test_list_scenarios_names_them_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--list-scenarios"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.strip().splitlines()] == list(SCENARIOS)


def test_scenario_prints_a_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scenario", "two-host-split"]) == 0
    out = capsys.readouterr().out
    for word in ("BEAT", "SUSPECT", "FENCE", "COMMIT", "MASTER", "outcome: as predicted"):
        assert word in out


def test_demo_shows_a_failover(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "host 0   FAULT     crash" in out
    assert "host 1   MASTER    gained the master lock" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--scenario", "nope"], "unknown scenario 'nope'"),
        (["simulate", "--hosts", "0"], "must be at least 1"),
        (["simulate", "--hosts", "many"], "expected a whole number"),
        (["simulate", "--hosts", "999"], "at most 256"),
        (["simulate", "--timeout", "0.1"], "timeout-floor"),
        (["simulate", "--mode", "quantum"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
