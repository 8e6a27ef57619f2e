"""Failover planning: where protected VMs go when hosts fail, and whether they fit.

Rules (spec section 8):

* A :class:`Problem` is what planning needs of a pool: per live host, the
  memory free for restarts (0 if it may not receive VMs: disabled) and the
  protected, agile, running VMs that must move if it fails; plus the protected
  agile VMs already waiting for a host (``pending``), which every plan places.
  Hosts and VMs are sorted by uuid, so every answer is deterministic.
* A plan for a set F of failed hosts places every VM of F and every pending VM
  on the hosts outside F, by memory. :func:`place` is best-fit decreasing
  (largest VM first, into the host it fills most tightly, ties by uuid): it
  never places a VM where it does not fit, so a placement it returns is a
  plan. :func:`decide` adds the exact answer for one F: necessary conditions
  that prove no plan exists, then a bounded branch-and-bound search.
* Nothing here claims a plan it has not built or proven by
  :mod:`hacluster.core.tolerance`'s counting argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from hacluster.core.pool import Pool, is_agile


@dataclass(frozen=True)
class Item:
    vm: str
    memory: int


@dataclass(frozen=True)
class PlanHost:
    uuid: str
    free: int  # MiB it can take; 0 when it may not receive VMs
    movable: tuple[Item, ...]  # protected agile running VMs, sorted by uuid

    @property
    def demand(self) -> int:
        return sum(item.memory for item in self.movable)


@dataclass(frozen=True)
class Problem:
    hosts: tuple[PlanHost, ...]
    pending: tuple[Item, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", tuple(sorted(self.hosts, key=lambda h: h.uuid)))
        object.__setattr__(self, "pending", tuple(sorted(self.pending, key=lambda i: i.vm)))

    @classmethod
    def from_pool(cls, pool: Pool, live: Iterable[str] | None = None) -> Problem:
        """The planning problem of ``pool`` over its ``live`` hosts (default: all)."""
        alive = set(live) if live is not None else {h.uuid for h in pool.hosts}
        movable: dict[str, list[Item]] = {h: [] for h in alive}
        pending: list[Item] = []
        for vm in pool.vms:
            if not vm.priority.protected or not is_agile(pool, vm):
                continue
            if vm.resident in alive:
                movable[vm.resident].append(Item(vm.uuid, vm.memory))
            elif vm.resident is None or vm.resident not in alive:
                pending.append(Item(vm.uuid, vm.memory))
        hosts = [
            PlanHost(h.uuid, max(0, pool.free_memory(h.uuid)) if h.enabled else 0,
                     tuple(movable[h.uuid]))
            for h in pool.hosts if h.uuid in alive
        ]
        return cls(tuple(hosts), tuple(pending))

    def items_for(self, failed: Iterable[str]) -> list[Item]:
        down = set(failed)
        items = [i for h in self.hosts if h.uuid in down for i in h.movable]
        return [*items, *self.pending]

    def bins_for(self, failed: Iterable[str]) -> list[tuple[str, int]]:
        down = set(failed)
        return [(h.uuid, h.free) for h in self.hosts if h.uuid not in down]


Placement = dict[str, str]  # vm uuid -> host uuid


def _decreasing(items: Iterable[Item]) -> list[Item]:
    return sorted(items, key=lambda i: (-i.memory, i.vm))


def place(items: Iterable[Item], bins: Sequence[tuple[str, int]]) -> tuple[Placement, list[Item]]:
    """Best-fit decreasing: the placement of every item that fits, and those that do not."""
    room = {uuid: free for uuid, free in bins}
    order = [uuid for uuid, _ in sorted(bins)]
    placement: Placement = {}
    unplaced: list[Item] = []
    for item in _decreasing(items):
        best: str | None = None
        for uuid in order:
            left = room[uuid] - item.memory
            if left >= 0 and (best is None or left < room[best] - item.memory):
                best = uuid
        if best is None:
            unplaced.append(item)
        else:
            room[best] -= item.memory
            placement[item.vm] = best
    return placement, unplaced


class Verdict(Enum):
    FITS = "fits"  # a placement was built
    NO_PLAN = "no plan"  # proven: no placement exists
    UNKNOWN = "unknown"  # the search budget ran out


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    placement: Placement | None = None
    why: str = ""


def impossible(items: Sequence[Item], capacities: Sequence[int]) -> str:
    """A reason no placement can exist, from counting alone; "" when none is found.

    For every size level s (each distinct item size): the items of size >= s
    need at least their total memory, and at least their number of places, in
    the bins of capacity >= s.
    """
    for level in sorted({i.memory for i in items}, reverse=True):
        big = [i.memory for i in items if i.memory >= level]
        room = sum(c for c in capacities if c >= level)
        slots = sum(c // level for c in capacities)
        if sum(big) > room:
            return (f"VMs of {level} MiB or more need {sum(big)} MiB, hosts with room for "
                    f"them have {room} MiB")
        if len(big) > slots:
            return f"{len(big)} VMs of {level} MiB or more, only {slots} places for them"
    return ""


def decide(items: Sequence[Item], bins: Sequence[tuple[str, int]],
           budget: int = 20_000) -> Decision:
    """Is there a placement of every item? Exact unless ``budget`` search nodes run out."""
    placement, unplaced = place(items, bins)
    if not unplaced:
        return Decision(Verdict.FITS, placement)
    why = impossible(items, [free for _, free in bins])
    if why:
        return Decision(Verdict.NO_PLAN, why=why)
    return _search(items, bins, budget)


def _search(items: Sequence[Item], bins: Sequence[tuple[str, int]], budget: int) -> Decision:
    """Branch and bound: largest item first; bins with equal room are tried once."""
    todo = _decreasing(items)
    names = [uuid for uuid, _ in sorted(bins)]
    room = [free for _, free in sorted(bins)]
    suffix = [0] * (len(todo) + 1)
    for k in range(len(todo) - 1, -1, -1):
        suffix[k] = suffix[k + 1] + todo[k].memory
    chosen = [0] * len(todo)
    nodes = 0

    def go(k: int) -> bool | None:
        nonlocal nodes
        if k == len(todo):
            return True
        nodes += 1
        if nodes > budget:
            return None
        size = todo[k].memory
        if sum(r for r in room if r >= todo[-1].memory) < suffix[k]:
            return False
        tried: set[int] = set()
        unknown = False
        for b, left in enumerate(room):
            if left < size or left in tried:
                continue
            tried.add(left)
            room[b] -= size
            chosen[k] = b
            found = go(k + 1)
            room[b] += size
            if found:
                return True
            unknown = unknown or found is None
        return None if unknown else False

    found = go(0)
    if found:
        return Decision(Verdict.FITS, {todo[k].vm: names[chosen[k]] for k in range(len(todo))})
    if found is None:
        return Decision(Verdict.UNKNOWN, why=f"search stopped after {budget} nodes")
    return Decision(Verdict.NO_PLAN, why="exhaustive search found no placement")


def plan_for(problem: Problem, failed: Iterable[str], budget: int = 20_000) -> Decision:
    """The plan (or proof there is none) for the failure of the hosts ``failed``."""
    down = frozenset(failed)
    return decide(problem.items_for(down), problem.bins_for(down), budget)
