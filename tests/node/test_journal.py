"""The daemon's stderr lines: one line each, with a syslog priority under systemd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hacluster.node.journal import Level, line


def test_lines_carry_their_priority_only_under_the_journal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert line(Level.WARNING, "warning: slow SR") == "hacluster node: warning: slow SR"
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert line(Level.WARNING, "warning: slow SR") == "<4>hacluster node: warning: slow SR"
    assert line(Level.CRIT, "fired\nkilled", who="hacluster watchdog") == \
        "<2>hacluster watchdog: fired killed"  # one line, whatever the text holds


def test_the_watchdogs_last_words_are_a_json_record_and_a_crit_line(tmp_path: Path) -> None:
    """A real watchdog process, armed and never petted again, kills a real group."""
    log = tmp_path / "events.jsonl"
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "hacluster.node.watchdog", "--group", str(victim.pid),
         "--log", str(log)], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "JOURNAL_STREAM": "8:1"})
    assert watchdog.stdin is not None and watchdog.stderr is not None
    watchdog.stdin.write(b"pet lease 0.2\n")
    watchdog.stdin.flush()
    assert victim.wait(10) == -signal.SIGKILL
    time.sleep(0.1)
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["event"] == "watchdog" and "lease" in record["text"]
    assert record["group"] == victim.pid and abs(record["time"] - time.time()) < 10
    watchdog.stdin.close()
    watchdog.wait(10)
    assert watchdog.stderr.read().decode().startswith("<2>hacluster watchdog: watchdog fired")
