"""Waiting for a lab pool to reach a state, by polling its status."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], bool], limit: float, poll: float = 0.05) -> float | None:
    """Poll ``check`` until it holds; return the seconds it took, or None after ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if check():
            return time.monotonic() - start
        time.sleep(poll)
    return None
