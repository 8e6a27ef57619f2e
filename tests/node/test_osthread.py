"""Threads named where the operating system shows them (/proc, top -H, ps -L)."""

from __future__ import annotations

import threading
from pathlib import Path

from hacluster.node.osthread import NAME_BYTES, name_os_thread


def _named_in_a_thread(name: str) -> str:
    seen: list[str] = []

    def run() -> None:
        name_os_thread(name)
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0].strip()


def test_a_thread_names_itself_for_the_os() -> None:
    assert _named_in_a_thread("liveness") == "liveness"
    assert Path("/proc/self/comm").read_text().strip() != "liveness"  # only that thread


def test_a_long_name_is_cut_to_what_the_kernel_keeps() -> None:
    assert _named_in_a_thread("storage-management-lane") == "storage-management-lane"[:NAME_BYTES]
