"""The default guest (:mod:`hacluster.vm.guest`) as the driver and agent tests run it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from hacluster.vm.records import read_records

GUEST = [sys.executable, "-m", "hacluster.vm.guest", "--interval", "0.05"]


def guest(disk: Path, vm: str) -> list[str]:
    """The command of a guest of ``vm`` on host h0 writing to ``disk``."""
    return [*GUEST, "--disk", str(disk), "--vm", vm, "--host", "h0"]


async def written(disk: Path, limit: float = 30.0) -> None:
    """Until the guest on ``disk`` wrote its first record: a start only says its process
    outlived the driver's settle time, and a loaded machine may take longer to get a
    Python guest that far (another guest refuses the disk only once it is written)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not (disk.exists() and read_records(disk)):
        assert loop.time() < deadline, f"no guest wrote {disk} within {limit} s"
        await asyncio.sleep(0.02)
