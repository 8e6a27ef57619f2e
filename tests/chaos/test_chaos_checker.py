"""The chaos checker on run directories written record by record.

Each test lays out what a real run leaves (journal, guests' disks, node event
logs) with the same writers and formats, plants one fault of the pool, and
checks the verdict names it; a clean run must get none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hacluster.chaos.checker import LAB, check
from hacluster.chaos.journal import JOURNAL, read_journal
from hacluster.chaos.runner import protected_vms
from hacluster.chaos.timeline import draw
from hacluster.lab.workloads import VM_SR, write_pool
from hacluster.vm.records import Record

BEGIN = 1_800_000_000.0
END = BEGIN + 30.0


class Run:
    """A chaos run directory under construction."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lab = root / LAB
        self.lab.mkdir(parents=True)
        write_pool(self.lab, 3, None)
        self.journal: list[dict[str, object]] = [
            {"time": BEGIN, "event": "begin", "backend": "netns", "hosts": 3, "timeout": 3.0,
             "seed": 7, "rate": 4.0, "duration": 30.0, "unsafe_watchdog_delay": None}]
        self.instances = 0

    def guest(self, vm: str, host: int, first: float, last: float) -> None:
        """One run of ``vm`` on ``host`` beating every 0.1 s between the offsets."""
        self.instances += 1
        instance = f"i{self.instances:04}"
        with (self.lab / VM_SR / f"{vm}.disk").open("ab") as disk:
            for seq in range(round((last - first) / 0.1) + 1):
                event = "start" if seq == 0 else "beat"
                disk.write(Record(vm, f"host{host}", instance, seq,
                                  BEGIN + first + seq * 0.1, event).to_line())

    def event(self, host: int, offset: float, event: str, **fields: object) -> None:
        directory = self.lab / f"host{host}"
        directory.mkdir(exist_ok=True)
        with (directory / "events.jsonl").open("a") as log:
            log.write(json.dumps({"time": BEGIN + offset, "host": host, "event": event,
                                  **fields}) + "\n")

    def fault(self, n: int, offset: float, kind: str, hosts: list[int], hold: float,
              settled: bool = True) -> None:
        self.journal.append({"time": BEGIN + offset, "event": "inject", "n": n, "kind": kind,
                             "hosts": hosts, "what": f"{kind} host {hosts[0]}", "hold": hold})
        self.journal.append({"time": BEGIN + offset + hold, "event": "heal", "n": n})
        if settled:
            self.journal.append({"time": BEGIN + offset + hold + 5, "event": "settled",
                                 "n": n, "took": 5.0})
        else:
            self.journal.append({"time": BEGIN + offset + hold + 60, "event": "unsettled",
                                 "n": n, "limit": 60.0, "pool": "hosts: 1 JOINING"})

    def finish(self) -> Path:
        self.journal.append({"time": END, "event": "end"})
        with (self.root / JOURNAL).open("w") as out:
            for record in self.journal:
                out.write(json.dumps(record) + "\n")
        return self.root


def steady_pool(run: Run, except_vm: str = "") -> None:
    """Every VM running where the default pool puts it, for the whole run."""
    for vm, host in (("vm-dhcp", 0), ("vm-sql", 0), ("vm-batch", 0), ("vm-scratch", 0),
                     ("vm-web1", 1), ("vm-web2", 2)):
        if vm != except_vm:
            run.guest(vm, host, 0.5, 30.0)
    for host in range(3):
        run.event(host, 0.2, "start")
    run.event(0, 0.4, "master", gained=True)


def double_run(run: Run) -> Run:
    """A planted double run: vm-web1 goes on running on paused host 1 until
    t+11 while a survivor restarted it at t+9.5."""
    steady_pool(run, except_vm="vm-web1")
    run.guest("vm-web1", 1, 0.5, 11.0)
    run.fault(1, 5.0, "pause", [1], 6.0)
    run.guest("vm-web1", 2, 9.5, 30.0)
    return run


def test_a_clean_failover_has_no_violation_and_its_recovery_is_measured(
        tmp_path: Path) -> None:
    run = Run(tmp_path)
    steady_pool(run, except_vm="vm-web1")
    run.guest("vm-web1", 1, 0.5, 10.0)  # host 1 killed at 10.05
    run.fault(1, 10.05, "kill", [1], 4.0)
    run.guest("vm-web1", 2, 16.05, 30.0)  # restarted on host 2, 6 s later
    verdict = check(run.finish())
    assert verdict.violations == []
    [fault] = verdict.faults
    assert fault.affected == ["vm-web1"]
    assert fault.recovery == pytest.approx(6.0, abs=0.01)
    assert "verdict: 0 violation(s)" in verdict.report()
    assert "median 6.00s" in verdict.report()


def test_a_vm_on_two_hosts_at_once_is_a_violation(tmp_path: Path) -> None:
    run = double_run(Run(tmp_path))
    run.event(1, 11.0, "watchdog", text="watchdog fired")
    verdict = check(run.finish())
    [violation] = verdict.violations
    assert violation.startswith("single-run: vm-web1 ran on host1")
    assert "for 1.50s" in violation
    assert verdict.faults[0].fenced == [1]
    assert not verdict.ok


def test_a_protected_vm_that_never_runs_again_is_a_violation(tmp_path: Path) -> None:
    run = Run(tmp_path)
    steady_pool(run, except_vm="vm-web2")
    run.guest("vm-web2", 2, 0.5, 12.0)
    run.fault(1, 12.0, "kill", [2], 3.0)
    verdict = check(run.finish())
    assert verdict.violations == [
        "recovery: protected VM vm-web2 stopped on host2 at t+12.0s and never ran again"]
    assert verdict.faults[0].affected == ["vm-web2"]
    assert verdict.faults[0].recovery is None


def test_an_unprotected_vm_may_stay_down(tmp_path: Path) -> None:
    run = Run(tmp_path)
    steady_pool(run, except_vm="vm-scratch")
    run.guest("vm-scratch", 0, 0.5, 12.0)
    run.fault(1, 12.0, "kill", [0], 3.0)
    assert check(run.finish()).violations == []
    assert "vm-scratch" not in protected_vms(run.lab)


def test_a_pool_that_does_not_settle_is_a_violation(tmp_path: Path) -> None:
    run = Run(tmp_path)
    steady_pool(run)
    run.fault(1, 5.0, "partition", [0, 1, 2], 4.0, settled=False)
    [violation] = check(run.finish()).violations
    assert "did not settle within 60.0s after fault 1 (hosts: 1 JOINING)" in violation


def test_a_vm_that_never_ran_is_a_violation(tmp_path: Path) -> None:
    run = Run(tmp_path)
    steady_pool(run, except_vm="vm-sql")
    assert check(run.finish()).violations == ["recovery: protected VM vm-sql never ran"]


def test_the_timeline_is_a_png(tmp_path: Path) -> None:
    png = draw(check(double_run(Run(tmp_path)).finish()), tmp_path / "timeline.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_a_torn_last_journal_line_is_skipped_and_garbage_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL
    path.write_text('{"time": 1, "event": "begin"}\n{"time": 2, "ev')
    assert read_journal(path) == [{"time": 1, "event": "begin"}]
    path.write_text('{"time": 1, "event": "begin"}\nnot json\n')
    with pytest.raises(ValueError, match="not a journal record"):
        read_journal(path)


def test_check_command_exit_codes(tmp_path: Path) -> None:
    clean = Run(tmp_path / "clean")
    steady_pool(clean)
    bad = Run(tmp_path / "bad")
    steady_pool(bad, except_vm="vm-sql")

    def chaos_check(directory: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hacluster", "chaos", "--check",
                               str(directory)], capture_output=True, text=True, timeout=60)

    ok = chaos_check(clean.finish())
    assert ok.returncode == 0, ok.stderr
    assert "verdict: 0 violation(s)" in ok.stdout and (clean.root / "timeline.png").exists()
    failed = chaos_check(bad.finish())
    assert failed.returncode == 1 and "VIOLATION recovery" in failed.stdout
    missing = chaos_check(tmp_path / "nothing")
    assert missing.returncode == 2 and "cannot check" in missing.stderr


@pytest.mark.parametrize("words, message", [
    (["--hosts", "1"], "two hosts or more"),
    (["--unsafe-watchdog-delay", "-1"], "--unsafe-watchdog-delay must be"),
    (["--backend", "local"], "invalid choice"),
    (["--rate", "0"], "must be positive"),
])
def test_bad_chaos_input_is_refused_and_changes_nothing(tmp_path: Path, words: list[str],
                                                         message: str) -> None:
    directory = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "hacluster", "chaos", "--dir", str(directory),
                           *words], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert not directory.exists()
