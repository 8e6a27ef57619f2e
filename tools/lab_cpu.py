"""CPU of a running lab's node daemons: per daemon, and per thread kind.

``python tools/lab_cpu.py DIR [--seconds S]`` samples ``/proc`` twice, S
seconds apart, for every ``hacluster node`` process whose config lies in the
lab directory DIR, and prints milliseconds of CPU per second (user and
system) per daemon, then the same split by thread: the main loop, the
liveness loop, the SR lanes and the rest. A thread is known by the order
Python started it in (``/proc`` does not carry Python's thread names):
the first is the main thread, and the liveness thread is the one that
spent most among the others, the SR lane the next.

Prints figures; never asserts on them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def daemons(lab: Path) -> list[int]:
    """The pids of the lab's node daemons (not the wrappers that start them)."""
    found = []
    marker = f"{lab.resolve()}/".encode()
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (entry.name.isdigit() and b"-m" in words and b"hacluster" in words
                and b"node" in words and any(w.startswith(marker) for w in words)
                and Path(os.fsdecode(words[0])).name.startswith("python")):
            found.append(int(entry.name))
    return found


def threads(pid: int) -> dict[int, tuple[int, int]]:
    """Each thread of ``pid``: (user ticks, system ticks)."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        times[int(task.name)] = (int(fields[11]), int(fields[12]))
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lab", type=Path)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    pids = daemons(args.lab)
    if not pids:
        print(f"no node daemon of a lab in {args.lab}", file=sys.stderr)
        return 1
    before = {pid: threads(pid) for pid in pids}
    time.sleep(args.seconds)
    after = {pid: threads(pid) for pid in pids}
    kinds: dict[str, list[int]] = {"main": [0, 0], "liveness": [0, 0], "SR lane": [0, 0],
                                   "other": [0, 0]}
    alive = [pid for pid in pids if after[pid]]
    for pid in alive:
        spent = {tid: (after[pid][tid][0] - before[pid][tid][0],
                       after[pid][tid][1] - before[pid][tid][1])
                 for tid in after[pid] if tid in before[pid]}
        others = sorted((t for t in spent if t != pid), key=lambda t: -sum(spent[t]))
        names = {pid: "main"} | dict(zip(others, ["liveness", "SR lane"], strict=False))
        for tid, (user, system) in spent.items():
            kind = kinds[names.get(tid, "other")]
            kind[0] += user
            kind[1] += system
    scale = 1000 / TICK / args.seconds / len(alive)
    total = [sum(k[0] for k in kinds.values()), sum(k[1] for k in kinds.values())]
    print(f"{len(alive)} daemons over {args.seconds:g} s, ms of CPU per second per daemon")
    for name, (user, system) in [*kinds.items(), ("all", total)]:
        print(f"  {name:9} user {user * scale:6.2f}  system {system * scale:6.2f}  "
              f"total {(user + system) * scale:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
