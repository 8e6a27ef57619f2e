"""What the node daemon says on stderr, readable by people and by systemd's journal.

Rules: every line starts ``hacluster node:`` (``hacluster watchdog:`` for the
watchdog); under systemd, whose journal sets ``JOURNAL_STREAM`` for a
service's stderr, each line also starts with its syslog priority, ``<N>``,
so ``journalctl -p warning`` finds warnings and errors. One line, flushed at
once: a daemon that dies next must not lose it.
"""

from __future__ import annotations

import enum
import os
import sys


class Level(enum.IntEnum):
    """syslog priorities."""

    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6


def line(level: Level, text: str, who: str = "hacluster node") -> str:
    """``text`` as one stderr line (no newline at the end)."""
    prefix = f"<{int(level)}>" if os.environ.get("JOURNAL_STREAM") else ""
    return f"{prefix}{who}: {' '.join(text.splitlines())}"


def say(level: Level, text: str, who: str = "hacluster node") -> None:
    """Write ``text`` to stderr as one line, flushed."""
    sys.stderr.write(line(level, text, who) + "\n")
    sys.stderr.flush()
