"""tools/chaos_batch.py: seed lists, refusals, and the summary over run directories.

No lab runs here: run directories are written record by record as in
test_chaos_checker.py, and a stand-in for ``hacluster chaos`` (a Python
process) copies one into the seed's directory and exits with the status the
real run would have.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import load_tool
from .test_chaos_checker import Run, double_run, steady_pool

chaos_batch = load_tool("chaos_batch")

STAND_IN = ("import shutil, sys; print('stand-in chaos run of seed', sys.argv[3]); "
            "shutil.copytree(sys.argv[1], sys.argv[2], dirs_exist_ok=True); "
            "sys.exit(int(sys.argv[4]))")
Command = Callable[[int, Path, argparse.Namespace], list[str]]


def stand_in(prepared: Path, codes: dict[int, int]) -> Command:
    """A chaos command that copies ``prepared/seed-N`` and exits ``codes[N]`` (default 0)."""
    def command(seed: int, directory: Path, args: argparse.Namespace) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(prepared / f"seed-{seed}"), str(directory),
                str(seed), str(codes.get(seed, 0))]
    return command


def failover(root: Path, recovery: float) -> None:
    """A clean run: host 1 killed at t+10, vm-web1 running again ``recovery`` s later."""
    run = Run(root)
    steady_pool(run, except_vm="vm-web1")
    run.guest("vm-web1", 1, 0.5, 10.0)
    run.fault(1, 10.05, "kill", [1], 4.0)
    run.guest("vm-web1", 2, 10.05 + recovery, 30.0)
    run.finish()


def planted_double_run(root: Path) -> None:
    """The planted violation: vm-web1 restarted at t+9.5 while still running on host 1."""
    double_run(Run(root)).finish()


@pytest.mark.parametrize("text, seeds", [
    ("1-20", list(range(1, 21))),
    ("90210", [90210]),
    ("7,90210", [7, 90210]),
    ("1-3, 7,9-10", [1, 2, 3, 7, 9, 10]),
    ("5-5", [5]),
])
def test_seed_lists(text: str, seeds: list[int]) -> None:
    assert chaos_batch.seed_list(text) == seeds


def test_repeated_seed_options_add_up(tmp_path: Path) -> None:
    args = chaos_batch.parse(["--seeds", "1-3", "--seeds", "90210,5", "--dir", str(tmp_path)])
    assert args.seeds == [1, 2, 3, 90210, 5]


@pytest.mark.parametrize("words, message", [
    (["--seeds", "3-1"], "empty range 3-1"),
    (["--seeds", "a"], "bad seeds 'a'"),
    (["--seeds", "1-"], "bad seeds"),
    (["--seeds", "1,,2"], "bad seeds"),
    (["--seeds", ""], "bad seeds"),
    (["--seeds", "-1"], "bad seeds"),
    (["--seeds", "1-3", "--seeds", "2"], "seed(s) given twice: 2"),
    ([], "--seeds"),
    (["--seeds", "1", "--duration", "0"], "must be positive"),
    (["--seeds", "1", "--duration", "-300"], "must be positive"),
    (["--seeds", "1", "--rate", "0"], "must be positive"),
    (["--seeds", "1", "--hosts", "1"], "two hosts or more"),
    (["--seeds", "1", "--jobs", "0"], "must be at least 1"),
    (["--seeds", "1", "--timeout", "0"], "--timeout"),
    (["--seeds", "1", "--backend", "local"], "invalid choice"),
    (["--seeds", "1", "--markdown", "/nonexistent/results.md"], "no directory /nonexistent"),
])
def test_bad_input_exits_2_and_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str],
                                            words: list[str], message: str) -> None:
    def never(*_: object) -> list[str]:
        raise AssertionError("a run was started")

    monkeypatch.setattr(chaos_batch, "chaos_command", never)
    batch = tmp_path / "batch"
    with pytest.raises(SystemExit) as exit_:
        chaos_batch.main([*words, "--dir", str(batch)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not batch.exists()


def test_a_lab_still_up_in_a_seed_directory_is_refused(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    lab = tmp_path / "seed-2" / "lab"
    lab.mkdir(parents=True)
    (lab / "lab.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        chaos_batch.main(["--seeds", "1-3", "--dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"still up in {tmp_path / 'seed-2'}" in capsys.readouterr().err
    assert (lab / "lab.json").exists() and not (tmp_path / "seed-1").exists()


def test_the_batch_summarises_its_seeds_and_fails_on_a_planted_violation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    prepared = tmp_path / "prepared"
    failover(prepared / "seed-1", recovery=6.0)
    failover(prepared / "seed-2", recovery=8.0)
    planted_double_run(prepared / "seed-3")  # recovery 4.5 s, and a double run
    monkeypatch.setattr(chaos_batch, "chaos_command", stand_in(prepared, {3: 1}))
    batch, table = tmp_path / "batch", tmp_path / "results.md"
    words = ["--seeds", "1-2", "--seeds", "3", "--jobs", "2", "--duration", "300", "--rate",
             "6", "--hosts", "5", "--dir", str(batch), "--markdown", str(table)]
    assert chaos_batch.main(words) == 1
    out = capsys.readouterr().out
    assert "seed 1: 30s run, 1 faults, 0 violations, recovery median 6.00s, max 6.00s" in out
    assert "seed 3: 30s run, 1 faults, 1 violations, recovery median 4.50s, max 4.50s" in out
    total = ("batch: 3 seeds, 90s of runs, 3 faults, 1 violations, recovery median 6.00s, "
             "max 8.00s over 3 faults that stopped protected VMs; 1 seed(s) failed")
    assert total in out
    failed = out[out.index("FAILED"):].splitlines()
    assert failed[0].startswith("FAILED seed 3: single-run: vm-web1 ran on host1")
    assert failed[1] == ("  replay: hacluster chaos --backend netns --hosts 5 --timeout 3.0 "
                         "--duration 300 --rate 6 --seed 3")
    assert failed[2] == f"  judge again: hacluster chaos --check {batch / 'seed-3'}"
    assert "FAILED seed 1" not in out and "FAILED seed 2" not in out
    table_rows = [r for r in map(str.split, out.splitlines()) if r[:1] in (["1"], ["2"], ["3"])]
    assert [r[:5] + r[-1:] for r in table_rows] == [
        ["1", "30s", "1", "1", "0", "ok"], ["2", "30s", "1", "1", "0", "ok"],
        ["3", "30s", "1", "1", "1", "VIOLATION"]]
    assert "stand-in chaos run of seed 2" in (batch / "seed-2" / "stdout.txt").read_text()
    markdown = table.read_text()
    assert "`python tools/chaos_batch.py --seeds 1-2 --seeds 3 --jobs 2" in markdown
    assert "| 2 | 30s | 1 | 1 | 0 | 8.00s | 8.00s |" in markdown
    assert "| VIOLATION |" in markdown and total in markdown


def test_runs_that_crash_or_hang_fail_and_the_batch_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    prepared = tmp_path / "prepared"
    failover(prepared / "seed-1", recovery=6.0)
    failover(prepared / "seed-3", recovery=6.0)  # judged clean, but its run exited 1
    # seed 2 has nothing to copy: the stand-in dies with a traceback, leaving no journal
    command = stand_in(prepared, {3: 1})

    def with_a_hang(seed: int, directory: Path, args: argparse.Namespace) -> list[str]:
        if seed == 4:
            return [sys.executable, "-c", "import time; time.sleep(60)"]
        return command(seed, directory, args)

    monkeypatch.setattr(chaos_batch, "chaos_command", with_a_hang)
    monkeypatch.setattr(chaos_batch, "time_limit", lambda args: 1.0)
    batch = tmp_path / "batch"
    assert chaos_batch.main(["--seeds", "1-4", "--dir", str(batch)]) == 1
    out = capsys.readouterr().out
    assert "FAILED seed 1" not in out
    assert "FAILED seed 2: hacluster chaos exited 1; not judged: FileNotFoundError" in out
    assert "Traceback" in (batch / "seed-2" / "stdout.txt").read_text()
    assert f"FAILED seed 3: hacluster chaos exited 1 (see {batch / 'seed-3'}" in out
    assert "FAILED seed 4: timed out and was interrupted; not judged" in out
    assert "batch: 4 seeds, 60s of runs, 2 faults, 0 violations" in out
    assert "3 seed(s) failed" in out


def test_a_clean_batch_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    prepared = tmp_path / "prepared"
    failover(prepared / "seed-90210", recovery=7.0)
    monkeypatch.setattr(chaos_batch, "chaos_command", stand_in(prepared, {}))
    assert chaos_batch.main(["--seeds", "90210", "--dir", str(tmp_path / "batch")]) == 0
    out = capsys.readouterr().out
    assert "batch: 1 seeds, 30s of runs, 1 faults, 0 violations" in out and "FAILED" not in out
