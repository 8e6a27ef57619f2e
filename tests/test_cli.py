"""The hacluster command line, as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hacluster import __version__
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


def test_simulated_demo_shows_a_failover(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--simulated"]) == 0
    out = capsys.readouterr().out
    assert "host 0   FAULT     crash" in out
    assert "host 1   MASTER    gained the master lock" in out


def test_demo_fails_over_real_processes() -> None:
    done = run("demo", "--timeout", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The pool is healthy" in done.stdout
    assert "is the new master" in done.stdout
    assert "lab stopped and removed" in done.stdout


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
        (["lab", "--dir", "/nonexistent/lab", "status"], "run 'hacluster lab up' first"),
        (["lab", "status", "--dir", "/nonexistent/lab"], "run 'hacluster lab up' first"),
        (["lab", "partition", "0,x", "2"], "a group is host numbers with commas"),
        (["lab", "storage", "1", "melt"], "invalid choice: 'melt'"),
        (["lab", "drop-from", "1"], "the following arguments are required: peer"),
        (["lab", "pause", "1", "-3"], "must be"),
        (["node", "--config", "/nonexistent.toml"], "No such file"),
        (["sr-format", "/tmp/x.sr", "--hosts", "3", "--key-file", "/nonexistent"],
         "pool key file"),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_version_and_a_closed_pipe() -> None:
    assert run("--version").stdout.strip() == f"hacluster {__version__}"
    # a reader that goes away before the output comes (| head) is no error, no traceback
    for command in (["hacluster", "simulate", "--list-scenarios"],
                    ["hacluster.mgmt.hactl", "help"]):
        child = subprocess.Popen([sys.executable, "-m", *command], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()  # the reader is gone before the tool has imported
        errors = child.stderr.read().decode()
        assert child.wait(60) == 141 and errors == "", errors
        child.stderr.close()


def test_the_lab_status_table_shows_livesets_as_runs() -> None:
    from hacluster.lab.render import ranges, status_table

    assert ranges([0, 1, 2, 5, 7, 8]) == "[0-2, 5, 7-8]"
    assert ranges([]) == "[]" and ranges([4]) == "[4]"
    table = status_table([{"host": 0, "phase": "NORMAL", "liveset": list(range(128)),
                           "vms": []}])
    assert "[0-127]" in table


def test_lab_status_prints_what_each_host_waits_for() -> None:
    from hacluster.lab.render import status_table

    rows = [{"host": 0, "phase": "PROPOSED", "liveset": [0, 1, 2], "vms": [],
             "waiting": ["commit waits for host 2: last seen by me 1.0s ago, needs 5.8s "
                         "unseen or its own fence report"]},
            {"host": 1, "phase": "NORMAL", "liveset": [0, 1, 2], "vms": [], "waiting": []}]
    lines = status_table(rows).splitlines()
    assert [line for line in lines if "waits" in line] == [
        "host 0 waits: commit waits for host 2: last seen by me 1.0s ago, needs 5.8s unseen "
        "or its own fence report"]
