"""The guest program on real disks, and the record checker that reads them back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hacluster.vm.guest import REFUSED_EXIT, crash_file, halt_file
from hacluster.vm.records import (
    Record,
    double_runs,
    first_start_after,
    instances,
    last_record,
    read_records,
)
from tests.conftest import wait_for

Guest = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def guest() -> Iterator[Guest]:
    """Start guests (disk, vm, host, extra arguments); kill any left at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(disk: Path, vm: str = "vm-1", host: str = "h0", *extra: str
              ) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "hacluster.vm.guest", "--disk", str(disk), "--vm", vm,
             "--host", host, "--interval", "0.05", *extra],
            stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.communicate()


def beats(disk: Path, instance_count: int = 1, at_least: int = 3) -> None:
    def enough() -> bool:
        found = instances(read_records(disk)) if disk.exists() else []
        return len(found) >= instance_count and all(i.records >= at_least for i in found)
    wait_for(enough, 10, f"{instance_count} guests writing {at_least} records to {disk}")


def test_start_beats_and_sigterm_stop(tmp_path: Path, guest: Guest) -> None:
    disk = tmp_path / "vm.disk"
    process = guest(disk)
    beats(disk)
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    records = read_records(disk)
    assert records.skipped == 0
    assert records[0].event == "start"
    assert {r.event for r in records[1:-1]} == {"beat"}
    assert records[-1].event == "stop"
    assert [r.seq for r in records] == list(range(len(records)))
    assert len({r.instance for r in records}) == 1 and len(records[0].instance) == 16
    [run] = instances(records)
    assert (run.vm, run.host, run.ended) == ("vm-1", "h0", "stop")


def test_halt_file_is_an_internal_shutdown(tmp_path: Path, guest: Guest) -> None:
    disk = tmp_path / "vm.disk"
    process = guest(disk)
    beats(disk)
    halt_file(disk).touch()
    assert process.wait(10) == 0
    assert not halt_file(disk).exists()
    assert read_records(disk)[-1].event == "halt"


def test_crash_file_exits_non_zero_without_a_record(tmp_path: Path, guest: Guest) -> None:
    disk = tmp_path / "vm.disk"
    process = guest(disk)
    beats(disk)
    crash_file(disk).touch()
    assert process.wait(10) != 0
    assert not crash_file(disk).exists()
    [run] = instances(read_records(disk))
    assert run.ended is None


def test_second_guest_is_refused_and_writes_nothing(tmp_path: Path, guest: Guest) -> None:
    disk = tmp_path / "vm.disk"
    first = guest(disk, "vm-1", "h0")
    beats(disk)
    second = guest(disk, "vm-1", "h1")
    _, error = second.communicate(timeout=10)
    assert second.returncode == REFUSED_EXIT
    assert "refusing" in error
    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 0
    records = read_records(disk)
    assert {r.host for r in records} == {"h0"}
    assert double_runs(instances(records)) == []


def test_planted_double_run_is_caught(tmp_path: Path, guest: Guest) -> None:
    disk = tmp_path / "vm.disk"
    first = guest(disk, "vm-1", "h0")
    beats(disk)
    second = guest(disk, "vm-1", "h1", "--no-refuse")
    beats(disk, instance_count=2)
    for process in (first, second):
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    [(earlier, later)] = double_runs(instances(read_records(disk)))
    assert (earlier.host, later.host) == ("h0", "h1")


def test_restart_after_a_clean_end_or_a_quiet_disk(tmp_path: Path, guest: Guest) -> None:
    disk = tmp_path / "vm.disk"
    first = guest(disk, "vm-1", "h0")
    beats(disk)
    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 0
    second = guest(disk, "vm-1", "h1", "--live-window", "0.5")
    beats(disk, instance_count=2)
    crash_file(disk).touch()
    assert second.wait(10) != 0
    refused = guest(disk, "vm-1", "h2", "--live-window", "5")
    assert refused.wait(10) == REFUSED_EXIT
    time.sleep(0.6)  # the crashed instance's last beat is now older than the window
    third = guest(disk, "vm-1", "h2", "--live-window", "0.5")
    beats(disk, instance_count=3)
    halt_file(disk).touch()
    assert third.wait(10) == 0
    runs = instances(read_records(disk))
    assert [(r.host, r.ended) for r in runs] == [("h0", "stop"), ("h1", None), ("h2", "halt")]
    assert double_runs(runs) == []
    restarted = first_start_after(read_records(disk), runs[1].last)
    assert restarted is not None and restarted.host == "h2"


def record(instance: str, seq: int, when: float, event: str = "beat", vm: str = "vm-1",
           host: str = "h0") -> Record:
    return Record(vm, host, instance, seq, when, event)


def test_torn_and_corrupt_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    disk = tmp_path / "vm.disk"
    good = [record("a", 0, 1.0, "start"), record("a", 1, 2.0)]
    disk.write_bytes(good[0].to_line() + b'{"vm": "x"}\n' + b"\x00garbage\n" + good[1].to_line()
                     + b'{"vm":"vm-1","host":"h0","instance":"a","seq":2,"time"')
    records = read_records(disk)
    assert list(records) == good
    assert records.skipped == 3
    assert last_record(disk) == good[1]
    assert last_record(tmp_path / "missing") is None


def test_last_record_looks_past_a_long_corrupt_tail(tmp_path: Path) -> None:
    disk = tmp_path / "vm.disk"
    disk.write_bytes(record("a", 0, 1.0).to_line() + b"x" * 200_000 + b"\n")
    assert last_record(disk) == record("a", 0, 1.0)


def test_double_runs_only_between_overlapping_runs_of_one_vm() -> None:
    records = [
        record("a", 0, 1.0, "start"), record("a", 1, 3.0, "halt"),
        record("b", 0, 3.5, "start"), record("b", 1, 5.0),             # after a: fine
        record("c", 0, 4.0, "start", vm="vm-2"), record("c", 1, 6.0, vm="vm-2"),  # other VM
        record("d", 0, 4.5, "start", host="h1"), record("d", 1, 4.8, host="h1"),  # inside b
    ]
    runs = instances(records)
    assert [r.instance for r in runs] == ["a", "b", "c", "d"]
    assert [(x.instance, y.instance) for x, y in double_runs(runs)] == [("b", "d")]
    assert first_start_after(records, 3.2) == runs[1]
    assert first_start_after(records, 7.0) is None
