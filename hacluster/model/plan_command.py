"""``hacluster plan``: the recovery plan and the failures a pool can take, in words.

Rules: the pool comes from a pool file (``--pool``) or is synthetic
(``--random-pool H:V --seed S``); bad input exits 2 with a message that says
what to fix. The last line is always ``max_host_failures_to_tolerate: R exact``
or ``... R bound`` (a proven lower bound: the pool can take at least R).
"""

from __future__ import annotations

import json
import time
from typing import Any

from hacluster.core.pool import Pool, PoolError
from hacluster.core.recovery import RecoveryPlan, memory_by_priority, recovery_plan
from hacluster.model import poolfile
from hacluster.model.synthetic import parse_shape, random_pool

GIB = 1024


def load_pool(pool_path: str | None, shape: str | None, seed: int) -> Pool:
    if (pool_path is None) == (shape is None):
        raise PoolError("give either --pool FILE or --random-pool HOSTS:VMS")
    if pool_path is not None:
        return poolfile.load(pool_path).pool
    assert shape is not None
    try:
        hosts, vms = parse_shape(shape)
    except ValueError as error:
        raise PoolError(f"--random-pool: {error}") from None
    return random_pool(hosts, vms, seed)


def render(pool: Pool, plan: RecoveryPlan, seconds: float, targets: bool) -> list[str]:
    names = {h.uuid: h.name for h in pool.hosts}
    vm_names = {v.uuid: v.name for v in pool.vms}
    memory = memory_by_priority(pool)
    by_priority = ", ".join(f"{label} {mib / GIB:.1f}" for label, mib in memory["pool"].items())
    free = sum(pool.free_memory(h.uuid) for h in pool.hosts)
    lines = [f"pool: {len(pool.hosts)} hosts, {len(pool.vms)} VMs "
             f"({sum(v.priority.protected for v in pool.vms)} protected)",
             f"memory by priority (GiB): {by_priority}; free {free / GIB:.1f}"]
    singles = [s for s in plan.scenarios if len(s.failed) == 1]
    for scenario in plan.scenarios if targets else [s for s in singles if not s.fits]:
        failed = ", ".join(names[u] for u in scenario.failed)
        verdict = "fits" if scenario.fits else f"NO PLAN ({scenario.verdict.value})"
        lines.append(f"if {failed} fail(s): {scenario.moves} protected VMs, {verdict}")
        if targets and scenario.fits:
            per_host: dict[str, list[str]] = {}
            for vm, host in sorted(scenario.placement.items()):
                per_host.setdefault(names[host], []).append(vm_names.get(vm, vm))
            lines += [f"    -> {host}: {', '.join(vms)}" for host, vms in per_host.items()]
    lines.append(f"single-host failures with a plan: {sum(s.fits for s in singles)} "
                 f"of {len(singles)}")
    tol = plan.tolerance
    lines.append(f"why: {tol.why}")
    lines.append(f"configured ha-host-failures-to-tolerate: {plan.configured}"
                 + (" (OVERCOMMITTED: no plan for that many)" if plan.overcommitted else ""))
    lines.append(f"upper bound {tol.upper}; failure sets searched {tol.sets_decided}; "
                 f"{seconds:.2f}s")
    lines.append(f"max_host_failures_to_tolerate: {tol.max_failures} {tol.label}")
    return lines


def as_json(pool: Pool, plan: RecoveryPlan, seconds: float) -> dict[str, Any]:
    tol = plan.tolerance
    return {
        "max_host_failures_to_tolerate": tol.max_failures, "exact": tol.exact,
        "upper": tol.upper, "why": tol.why, "counterexample": tol.counterexample,
        "configured": plan.configured, "overcommitted": plan.overcommitted,
        "memory_by_priority": memory_by_priority(pool), "seconds": round(seconds, 3),
        "scenarios": [{"failed": s.failed, "moves": s.moves, "verdict": s.verdict.value,
                       "placement": s.placement} for s in plan.scenarios],
    }


def run_plan(pool_path: str | None, shape: str | None, seed: int, targets: bool,
             as_json_output: bool) -> int:
    pool = load_pool(pool_path, shape, seed)
    start = time.perf_counter()
    plan = recovery_plan(pool)
    seconds = time.perf_counter() - start
    if as_json_output:
        print(json.dumps(as_json(pool, plan, seconds), indent=2, sort_keys=True))
    else:
        print("\n".join(render(pool, plan, seconds, targets)))
    return 0
