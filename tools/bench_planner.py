"""Planner benchmark: max host failures to tolerate, ours beside the reference's method.

For each synthetic pool (``hacluster.model.synthetic.random_pool``, seeded) it
computes, in one run side by side:

* **ours**: :func:`hacluster.core.tolerance.max_failures`: the answer, whether
  it is exact or a proven bound, and the time;
* **reference**: the method the spec attributes to the reference system:
  while nPr < 3500 and n <= 32, every ordered choice of r failed hosts is
  bin-packed with a heuristic (best-fit decreasing here, the same placement we
  use); otherwise the approximation that every protected VM is as large as
  the largest and the r largest hosts fail. Its answer is checked against
  ours: "over-claims" means it claims a plan for more failures than exist.

A second table uses **dense** pools where counting alone cannot settle the
answer (few VM sizes that do not divide each other, hosts nearly full, a few
hardware classes), so the branch and bound over failure sets does the work.

Each figure is printed as a Markdown row. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import time
from collections.abc import Sequence

from hacluster.core.planner import Item, PlanHost, Problem, place
from hacluster.core.tolerance import Tolerance, max_failures
from hacluster.model.synthetic import parse_shape, random_pool

EXHAUSTIVE_LIMIT = 3500
EXHAUSTIVE_HOSTS = 32


def reference_plan_exists(problem: Problem, r: int) -> bool:
    """The reference's test for r failures (exhaustive or approximate)."""
    n = len(problem.hosts)
    uuids = [h.uuid for h in problem.hosts]
    if math.perm(n, r) < EXHAUSTIVE_LIMIT and n <= EXHAUSTIVE_HOSTS:
        return all(not place(problem.items_for(f), problem.bins_for(f))[1]
                   for f in itertools.permutations(uuids, r))
    largest = max((i.memory for h in problem.hosts for i in h.movable), default=0)
    if largest == 0:
        return True
    biggest = sorted(problem.hosts, key=lambda h: (-(h.free + h.demand), h.uuid))[:r]
    failed = {h.uuid for h in biggest}
    count = len(problem.items_for(failed))
    slots = sum(free // largest for _, free in problem.bins_for(failed))
    return count <= slots


def reference_max_failures(problem: Problem) -> int:
    best = -1
    for r in range(len(problem.hosts)):
        if not reference_plan_exists(problem, r):
            break
        best = r
    return best


def side_by_side(problem: Problem) -> tuple[Tolerance, float, int, float]:
    """Ours and the reference's answer on one problem, each with its time."""
    start = time.perf_counter()
    ours = max_failures(problem)
    middle = time.perf_counter()
    ref = reference_max_failures(problem)
    return ours, middle - start, ref, time.perf_counter() - middle


def measure(shape: str, seed: int, fill: float) -> str:
    hosts, vms = parse_shape(shape)
    pool = random_pool(hosts, vms, seed, fill=fill)
    problem = Problem.from_pool(pool)
    ours, ours_s, ref, ref_s = side_by_side(problem)
    method = ("exhaustive" if hosts <= EXHAUSTIVE_HOSTS
              and math.perm(hosts, min(ref + 1, hosts - 1)) < EXHAUSTIVE_LIMIT
              else "approximate")
    if ours.exact:
        verdict = "over-claims" if ref > ours.max_failures else (
            "exact" if ref == ours.max_failures else f"under by {ours.max_failures - ref}")
    else:
        verdict = "over-claims" if ref > ours.upper else "?"
    return (f"| {hosts} | {vms} | {fill:.2f} | {ours.max_failures} {ours.label} | "
            f"{ours.sets_decided} | {ours_s:.3f} | {ref} ({method}) | {verdict} | {ref_s:.3f} |")


def dense_problem(hosts: int, classes: int, seed: int) -> Problem:
    """Hosts of ``classes`` shapes: 10-13 GiB free, three VMs of 2, 3 or 5 GiB each."""
    rng = random.Random(seed)
    shapes = [(rng.choice((10, 11, 12, 13)), [rng.choice((2, 3, 3, 5)) for _ in range(3)])
              for _ in range(classes)]
    return Problem(tuple(
        PlanHost(f"h{i:04}", shapes[i % classes][0] * 1024,
                 tuple(Item(f"v{i}-{k}", size * 1024)
                       for k, size in enumerate(shapes[i % classes][1])))
        for i in range(hosts)))


def measure_dense(hosts: int, classes: int, seed: int) -> str:
    ours, ours_s, ref, ref_s = side_by_side(dense_problem(hosts, classes, seed))
    over = ref > (ours.max_failures if ours.exact else ours.upper)
    return (f"| {hosts} | {classes} | {ours.max_failures} {ours.label} (at most {ours.upper}) "
            f"| {ours.sets_decided} | {ours_s:.3f} | {ref} | "
            f"{'over-claims' if over else 'sound'} | {ref_s:.3f} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", default="16:500,32:1000,32:2000,64:2000,64:8000,128:4000,"
                        "128:8000,256:8000", help="comma-separated HOSTS:VMS")
    parser.add_argument("--fills", default="0.6,0.85", help="comma-separated pool fill ratios")
    parser.add_argument("--dense", default="16,32,64,128,256",
                        help="comma-separated host counts of the dense family")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"command: python tools/bench_planner.py --pools {args.pools} --fills {args.fills} "
          f"--dense {args.dense} --seed {args.seed}")
    print("| hosts | VMs | fill | ours: max failures | sets searched | ours (s) | "
          "reference: max failures | reference vs ours | reference (s) |")
    print("|---:|---:|---:|---|---:|---:|---|---|---:|")
    for fill in (float(f) for f in args.fills.split(",")):
        for shape in args.pools.split(","):
            print(measure(shape, args.seed, fill), flush=True)
    print()
    print("| hosts | host classes | ours: max failures | sets searched | ours (s) | "
          "reference | reference vs ours | reference (s) |")
    print("|---:|---:|---|---:|---:|---:|---|---:|")
    for hosts in (int(h) for h in args.dense.split(",")):
        for classes in (1, 2, 4):
            print(measure_dense(hosts, classes, args.seed), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
