"""The published recovery plan and the memory figures operators plan with.

Rules:

* For every single-host failure, and for every set of r hosts where there are
  at most ``max_sets`` such sets, the recovery plan gives the target host of
  each protected VM that would move, and which VMs would not fit. Targets come
  from :func:`planner.plan_for`, so they are the hosts the master would pick.
* The plan is a pure function of the pool and its live hosts: the master
  recomputes it on every lifecycle change (VM start, resume, migrate, add;
  host enable/disable; protection change; liveset change).
* Memory is reported per restart priority, for the pool and for each host,
  counting running VMs only (MiB).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

from hacluster.core.planner import Placement, Problem, Verdict, plan_for
from hacluster.core.pool import Pool, Priority
from hacluster.core.tolerance import Tolerance, max_failures


@dataclass(frozen=True)
class Scenario:
    failed: tuple[str, ...]
    moves: int  # protected VMs that would be restarted
    verdict: Verdict
    placement: Placement

    @property
    def fits(self) -> bool:
        return self.verdict is Verdict.FITS


@dataclass(frozen=True)
class RecoveryPlan:
    tolerance: Tolerance
    configured: int  # ha-host-failures-to-tolerate
    scenarios: tuple[Scenario, ...]

    @property
    def overcommitted(self) -> bool:
        return overcommitted(self.tolerance, self.configured)


def recovery_plan(pool: Pool, live: Iterable[str] | None = None, max_sets: int = 256,
                  cap: int | None = None, budget: int = 200_000) -> RecoveryPlan:
    problem = Problem.from_pool(pool, live)
    uuids = [h.uuid for h in problem.hosts]
    scenarios: list[Scenario] = []
    for r in range(1, len(uuids)):
        if r > 1 and math.comb(len(uuids), r) > max_sets:
            break
        scenarios.extend(_scenario(problem, failed)
                         for failed in itertools.combinations(uuids, r))
    return RecoveryPlan(max_failures(problem, cap=cap, budget=budget),
                        pool.host_failures_to_tolerate, tuple(scenarios))


def single_failures(pool: Pool, live: Iterable[str] | None = None) -> tuple[Scenario, ...]:
    """For each of ``live`` (every host if None) failing alone: where its protected VMs go."""
    problem = Problem.from_pool(pool, live)
    return tuple(_scenario(problem, (host.uuid,)) for host in problem.hosts)


def _scenario(problem: Problem, failed: tuple[str, ...]) -> Scenario:
    decision = plan_for(problem, failed)
    return Scenario(failed, len(problem.items_for(failed)), decision.verdict,
                    decision.placement or {})


def tolerance(pool: Pool, live: Iterable[str] | None = None) -> Tolerance:
    """Only the failures ``pool`` can take over its ``live`` hosts (no scenarios)."""
    return max_failures(Problem.from_pool(pool, live))


def overcommitted(tolerated: Tolerance, configured: int) -> bool:
    """No plan is known for the ``configured`` number of failures."""
    return tolerated.max_failures < configured


def clustered_cap(hosts: int, disabled: int) -> int:
    """Clustered pools keep quorum only up to ``(n - disabled - 1) // 2 + disabled`` failures."""
    return (hosts - disabled - 1) // 2 + disabled


def memory_by_priority(pool: Pool) -> dict[str, dict[str, int]]:
    """Running VMs' memory per priority label: ``{"pool": {...}, host uuid: {...}}``."""
    labels = [p.label for p in Priority]
    table = {key: dict.fromkeys(labels, 0) for key in ["pool", *(h.uuid for h in pool.hosts)]}
    for vm in pool.vms:
        if vm.resident is not None:
            table["pool"][vm.priority.label] += vm.memory
            table[vm.resident][vm.priority.label] += vm.memory
    return table
