"""CPU of a running lab's node daemons: per daemon, and per thread kind.

``python tools/lab_cpu.py DIR [--seconds S]`` samples ``/proc`` twice, S
seconds apart, for every ``hacluster node`` process whose config lies in the
lab directory DIR, and prints milliseconds of CPU per second (user and
system) per daemon, then the same split by thread, by the names the daemon
gives its threads (:mod:`hacluster.node.osthread`): the main loop, the
liveness loop, the SR lanes, the event log and the rest.

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
    """The pids of the lab's node daemons: ``<python> -m hacluster node`` with a
    config in ``lab`` (not the wrappers that start them in namespaces)."""
    found = []
    marker = f"{lab.resolve()}/".encode()
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (entry.name.isdigit() and words[1:4] == [b"-m", b"hacluster", b"node"]
                and Path(os.fsdecode(words[0])).name.startswith("python")
                and any(w.startswith(marker) for w in words)):
            found.append(int(entry.name))
    return found


def cpu_ticks(stat: Path) -> tuple[int, int]:
    """User and system clock ticks from a process's or thread's ``stat`` file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def threads(pid: int) -> dict[int, tuple[str, int, int]]:
    """Each thread of ``pid``: (its name, user ticks, system ticks); none once gone."""
    times = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            user, system = cpu_ticks(task / "stat")
        except OSError:
            continue
        times[int(task.name)] = ("main" if int(task.name) == pid else name, user, system)
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
    kinds: dict[str, list[int]] = {}
    alive = [pid for pid in pids if after[pid]]
    if not alive:
        print(f"the daemons of {args.lab} are gone", file=sys.stderr)
        return 1
    for pid in alive:
        for tid, (name, user, system) in after[pid].items():
            if tid in before[pid]:
                kind = kinds.setdefault(name, [0, 0])
                kind[0] += user - before[pid][tid][1]
                kind[1] += system - before[pid][tid][2]
    scale = 1000 / TICK / args.seconds / len(alive)
    total = [sum(k[0] for k in kinds.values()), sum(k[1] for k in kinds.values())]
    print(f"{len(alive)} daemons over {args.seconds:g} s, ms of CPU per second per daemon")
    ranked = sorted(kinds.items(), key=lambda kind: -sum(kind[1]))
    for name, (user, system) in [*ranked, ("all", total)]:
        print(f"  {name:15} user {user * scale:6.2f}  system {system * scale:6.2f}  "
              f"total {(user + system) * scale:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
