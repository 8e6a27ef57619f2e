"""What-if: a pool's own configuration, timing and placement in the simulator, under
one fault, and the timeline it predicts.

Rules:

* The pool's hosts, in HA index order, become simulated hosts 0..n-1 and keep
  their names; its VMs keep their memory, priority, order, start delay and
  placement. The timing is the pool's T, the mode the pool's, and restarts
  are retried as the node daemon retries them (:func:`daemon_restarts`).
* The simulated pool first settles (every host NORMAL, one master) and runs
  :data:`WARMUP` T more (its master's duties take over), then at
  one moment the hosts of ``fail`` crash (no last words) and ``partition``
  (groups of hosts) cuts the network between the groups.
* It runs until the pool is settled again with every VM that can run
  running, or :data:`HORIZON` T after the fault.
* The prediction, with times in seconds after the fault: who fenced and
  when, each liveset commit, the master before and after, and for every VM
  that had to move (it ran on a failed or fenced host) where and when it runs
  again, or that it stays down. It is deterministic: the seed fixes every
  random choice (clock skew, delays), and the pool's own data everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from hacluster.core.duties import pass_interval
from hacluster.core.messages import Phase
from hacluster.core.node import Mode
from hacluster.core.pool import Pool, Priority
from hacluster.core.restarts import RestartConfig
from hacluster.core.timing import Timing
from hacluster.sim.cluster import SimConfig, Simulation
from hacluster.sim.trace import Trace

HORIZON = 12.0  # T after the fault at most
SETTLE = 10.0  # T at most for the pool to settle before the fault
WARMUP = 2.0  # T the settled pool runs before the fault


class WhatIfError(ValueError):
    """A what-if that cannot be run as asked, and why."""


def daemon_restarts(timing: Timing) -> RestartConfig:
    """The node daemon's restart retry interval (hacluster.node.master), for the simulator."""
    return RestartConfig(retry_interval=max(2 * pass_interval(timing.t1), 1.0))


def predict(pool: Pool, timeout: float, mode: Mode, fail: Sequence[str],
            partition: Sequence[Sequence[str]] = (), seed: int = 1) -> dict[str, Any]:
    """The predicted timeline of ``fail`` (host names) crashing and ``partition`` (groups
    of host names) cutting the network, in ``pool`` (hosts in HA index order)."""
    names = [h.name for h in pool.hosts]
    index = {name: i for i, name in enumerate(names)}
    unknown = [n for n in (*fail, *(n for g in partition for n in g)) if n not in index]
    if unknown:
        raise WhatIfError(f"no host {', '.join(map(repr, unknown))} in the pool; its hosts: "
                          f"{', '.join(names)}")
    if not fail and not partition:
        raise WhatIfError("give a fault: fail=HOST[,HOST...] and/or partition=A,B/C,...")
    timing = Timing.derive(timeout)
    sim = Simulation(SimConfig(hosts=len(names), seed=seed, timing=timing, mode=mode,
                               pool=_placed(pool), restart=daemon_restarts(timing)),
                     trace=Trace())
    settled = _run_until(sim, lambda: _settled(sim), SETTLE * timing.T)
    if not settled:
        raise WhatIfError("the simulated pool did not settle before the fault")
    sim.run_until(sim.t + WARMUP * timing.T)  # the master's duties took over, as in a pool
    fault_at = sim.t
    master_before = sorted(sim.masters())
    placed = {vm: h.index for h in sim.hosts for vm in h.vms}  # before the fault
    for name in fail:
        sim.crash(index[name])
    if partition:
        sim.partition([[index[n] for n in group] for group in partition])
    moving = {vm: h for vm, h in placed.items() if h in {index[n] for n in fail}}
    _run_until(sim, lambda: sim.t > fault_at + timing.T and _recovered(sim)
               and not _waiting(sim, _moved(sim, placed, moving), fault_at), HORIZON * timing.T,
               step=timing.t1)
    moving = _moved(sim, placed, moving)
    return _prediction(sim, names, fault_at, master_before, moving, timing, mode)


def _placed(pool: Pool) -> Pool:
    """The pool as the simulator keys it: host ``i`` is ``host-i``, everywhere."""
    uuids = {h.uuid: f"host-{i}" for i, h in enumerate(pool.hosts)}

    def plugged(hosts: frozenset[str]) -> frozenset[str]:
        return frozenset(uuids[h] for h in hosts if h in uuids)

    return replace(
        pool, hosts=tuple(replace(h, uuid=uuids[h.uuid]) for h in pool.hosts),
        vms=tuple(replace(vm, resident=uuids[vm.resident]) if vm.resident in uuids else vm
                  for vm in pool.vms),
        srs=tuple(replace(sr, plugged=plugged(sr.plugged)) for sr in pool.srs),
        networks=tuple(replace(n, plugged=plugged(n.plugged)) for n in pool.networks))


def _run_until(sim: Simulation, done: Callable[[], bool], limit: float,
               step: float = 0.1) -> bool:
    end = sim.t + limit
    while sim.t < end:
        sim.run_until(min(end, sim.t + step))
        if done():
            return True
    return False


def _settled(sim: Simulation) -> bool:
    return len(sim.masters()) == 1 and not sim.unsettled()


def _recovered(sim: Simulation) -> bool:
    """One master, and every armed host NORMAL with the same liveset."""
    cores = [h.core for h in sim.hosts if h.core is not None and h.core.armed]
    return len(sim.masters()) == 1 and all(
        c.phase is Phase.NORMAL and c.liveset == cores[0].liveset for c in cores)


def _moved(sim: Simulation, placed: dict[str, int], failed: dict[str, int]) -> dict[str, int]:
    """The VMs that had to move: those of the failed hosts and of any host that fenced."""
    fenced = sim.fenced()
    return {**failed, **{vm: h for vm, h in placed.items() if h in fenced}}


def _waiting(sim: Simulation, moving: dict[str, int], since: float) -> bool:
    """Whether a VM that had to move and may run has not run since the fault."""
    pool = sim.pool_db
    ran = {e.vm for e in sim.vm_log if e.what == "running" and e.time >= since}
    return any(vm not in ran and pool.vm(vm).priority is not Priority.NONE for vm in moving)


def _prediction(sim: Simulation, names: list[str], fault_at: float, master_before: list[int],
                moving: dict[str, int], timing: Timing, mode: Mode) -> dict[str, Any]:
    def at(t: float) -> float:
        return round(t - fault_at, 2)

    events: list[dict[str, Any]] = []
    fences = [e for e in sim.trace.of_kind("FENCE") if e.time >= fault_at]
    for e in fences:
        events.append({"at": at(e.time), "text": f"{names[e.host or 0]} fences itself: {e.text}"})
    seen: set[tuple[int, ...]] = set()
    for t, host, commit in sim.commits:
        key = tuple(sorted(commit.liveset))
        if t >= fault_at and key not in seen and commit.removed:
            seen.add(key)
            events.append({"at": at(t), "text": f"liveset committed by {names[host]}: "
                           f"{[names[i] for i in key]}, removed "
                           f"{[names[i] for i in sorted(commit.removed)]}"})
    pool = sim.pool_db
    vms = []
    for vm, was_on in sorted(moving.items(), key=lambda item: _order(pool, item[0])):
        entry = pool.vm(vm)
        running = [e for e in sim.vm_log if e.vm == vm and e.what == "running"
                   and e.time >= fault_at]
        row: dict[str, Any] = {"vm": entry.name, "priority": entry.priority.value or "none",
                               "order": entry.order, "was_on": names[was_on]}
        if running:
            row |= {"runs_on": names[running[0].host], "at": at(running[0].time)}
            events.append({"at": row["at"], "text": f"{entry.name} runs on {row['runs_on']}"})
        else:
            row["down"] = True
        vms.append(row)
    masters = sorted(sim.masters())
    return {
        "timeout": timing.T, "mode": mode.value,
        "master_before": [names[i] for i in master_before],
        "master_after": [names[i] for i in masters],
        "fenced": [names[i] for i in sorted(sim.fenced())],
        "survivors": [names[i] for i in sorted(sim.survivors())],
        "vms": vms,
        "events": sorted(events, key=lambda e: e["at"]),
        "checker": [v.line() for v in sim.checker.violations],
    }


def _order(pool: Pool, vm: str) -> tuple[int, int, str]:
    entry = pool.vm(vm)
    rank = {Priority.RESTART: 0, Priority.BEST_EFFORT: 1, Priority.NONE: 2}[entry.priority]
    return rank, entry.order, entry.name
