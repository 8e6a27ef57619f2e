"""How close the random schedules' episodes come to the settle bound.

The checker's settle property (``hacluster.sim.checker``) only asks that the
pool has settled by the bound; this measures when each episode actually
settled, polling every ``--poll`` simulated seconds from the end of its faults,
and prints the ratio to the bound (median, 99th percentile, max) per mode, as
a Markdown table with the command that produced it. Episodes that never need
to settle (a statefile pool whose every host went down) are not counted.
Seeded; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from typing import ClassVar

from hacluster.core.node import Mode
from hacluster.sim.cluster import Simulation
from hacluster.sim.schedules import run_schedule


class TimedSimulation(Simulation):
    """Records, for every settle check, when the pool first settled (as a
    fraction of the bound)."""

    poll: ClassVar[float] = 0.25
    ratios: ClassVar[list[float]] = []

    def expect_settled(self, after: str, start: float | None = None) -> float:
        due = super().expect_settled(after, start)
        begin = self.t if start is None else start
        bound = self.settle_bound()

        def check(at: float) -> None:
            if not self.unsettled():
                TimedSimulation.ratios.append((self.t - begin) / bound)
            elif at + self.poll <= due:
                self.at(at + self.poll, lambda: check(at + self.poll))

        self.at(begin, lambda: check(begin))
        return due


def measure(hosts: int, mode: Mode, schedules: int, seed: int) -> list[float]:
    TimedSimulation.ratios = []
    for k in range(schedules):
        run_schedule(hosts, seed + k, mode, simulation=TimedSimulation)
    return TimedSimulation.ratios


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--schedules", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5000)
    args = parser.parse_args(argv)
    print(f"command: python tools/bench_settle.py --hosts {args.hosts} "
          f"--schedules {args.schedules} --seed {args.seed}\n")
    print("| mode | episodes settled | median / bound | p99 / bound | max / bound |")
    print("|---|---|---|---|---|")
    for mode in Mode:
        ratios = sorted(measure(args.hosts, mode, args.schedules, args.seed))
        if not ratios:
            print(f"| {mode.value} | 0 | - | - | - |")
            continue
        p99 = ratios[min(len(ratios) - 1, int(0.99 * len(ratios)))]
        print(f"| {mode.value} | {len(ratios)} | {statistics.median(ratios):.2f} | "
              f"{p99:.2f} | {ratios[-1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
