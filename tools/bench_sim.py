"""Simulator throughput: how much pool time the simulator covers per wall second.

For each pool size it measures, in one run side by side:

* a healthy pool (statefile mode, T = 5 s) run for ``--sim-seconds`` of
  simulated time: simulated seconds per wall second and simulator events
  (packets, I/O completions, timers) per wall second;
* ``--schedules`` random fault schedules (``hacluster.sim.schedules``):
  schedules per minute and the simulated time they cover.

Every run is seeded (``--seed``); the figures are printed as a Markdown table
with the command that produced them. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hacluster.core.node import Mode
from hacluster.sim.cluster import SimConfig, Simulation
from hacluster.sim.schedules import run_schedule


class CountingSimulation(Simulation):
    """A simulation that counts the events it schedules."""

    events = 0

    def at(self, t: float, action: Callable[[], None]) -> None:
        self.events += 1
        super().at(t, action)


@dataclass(frozen=True)
class Row:
    hosts: int
    sim_per_wall: float
    events_per_wall: float
    schedules_per_minute: float
    schedule_sim_seconds: float


def measure(hosts: int, sim_seconds: float, schedules: int, seed: int) -> Row:
    sim = CountingSimulation(SimConfig(hosts=hosts, seed=seed, timeout=5.0))
    start = time.perf_counter()
    sim.run_until(sim_seconds)
    healthy = time.perf_counter() - start
    start = time.perf_counter()
    covered = 0.0
    for k in range(schedules):
        covered += run_schedule(hosts, seed + k, Mode.STATEFILE, timeout=5.0).simulated
    random_wall = time.perf_counter() - start
    return Row(
        hosts=hosts,
        sim_per_wall=sim_seconds / healthy,
        events_per_wall=sim.events / healthy,
        schedules_per_minute=60 * schedules / random_wall if schedules else 0.0,
        schedule_sim_seconds=covered / schedules if schedules else 0.0,
    )


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| hosts | simulated s / wall s | events / wall s | schedules / min "
        "| simulated s per schedule |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.hosts} | {r.sim_per_wall:.2f} | {r.events_per_wall:,.0f} "
                     f"| {r.schedules_per_minute:.2f} | {r.schedule_sim_seconds:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hosts", default="16,64,256", help="comma-separated pool sizes")
    parser.add_argument("--sim-seconds", type=float, default=10.0)
    parser.add_argument("--schedules", default="4,2,1",
                        help="schedules per size (one number, or one per size)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [int(h) for h in args.hosts.split(",")]
    counts = [int(c) for c in args.schedules.split(",")]
    if len(counts) == 1:
        counts *= len(sizes)
    if len(counts) != len(sizes) or min(sizes) < 1 or min(counts) < 0:
        parser.error("--schedules needs one count, or one per size; sizes must be >= 1")
    rows = []
    for hosts, count in zip(sizes, counts, strict=True):
        rows.append(measure(hosts, args.sim_seconds, count, args.seed))
        print(f"measured {hosts} hosts", file=sys.stderr, flush=True)
    print("command: python tools/bench_sim.py " + " ".join(argv or sys.argv[1:]))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
