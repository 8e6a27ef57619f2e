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

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

from hacluster.core.pool import VM, Pool, is_agile


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
            else:
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
    """Best-fit decreasing: the placement of every item that fits, and those that do not.

    Each item, largest first, goes to the host with the least room that still
    fits it (ties by uuid): ``rooms`` is kept sorted by (room, uuid).
    """
    rooms = sorted((free, uuid) for uuid, free in bins)
    placement: Placement = {}
    unplaced: list[Item] = []
    for item in _decreasing(items):
        at = bisect.bisect_left(rooms, (item.memory, ""))
        if at == len(rooms):
            unplaced.append(item)
            continue
        free, uuid = rooms.pop(at)
        placement[item.vm] = uuid
        bisect.insort(rooms, (free - item.memory, uuid))
    return placement, unplaced


def place_vms(pool: Pool, vms: Iterable[VM],
              bins: Sequence[tuple[str, int]]) -> tuple[Placement, list[Item]]:
    """:func:`place` for VMs, honouring device classes: a VM that needs devices
    goes first, to the tightest room among the hosts offering them; the rest
    are placed best-fit decreasing on what is left."""
    rooms = dict(bins)
    placement: Placement = {}
    unplaced: list[Item] = []
    plain: list[Item] = []
    for vm in sorted(vms, key=lambda v: (-v.memory, v.uuid)):
        if not vm.devices:
            plain.append(Item(vm.uuid, vm.memory))
            continue
        fits = sorted((free - vm.memory, uuid) for uuid, free in rooms.items()
                      if free >= vm.memory and pool.can_host(vm, uuid))
        if not fits:
            unplaced.append(Item(vm.uuid, vm.memory))
            continue
        placement[vm.uuid] = fits[0][1]
        rooms[fits[0][1]] -= vm.memory
    rest, left = place(plain, sorted(rooms.items()))
    return placement | rest, unplaced + left


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
    return search(items, bins, budget)


def search(items: Sequence[Item], bins: Sequence[tuple[str, int]], budget: int) -> Decision:
    """Exact search over hosts, largest first: which count of each VM size each one takes.

    VMs of one size are interchangeable, so a state is (host, VMs left per size);
    a state proven hopeless is remembered, which also folds hosts of equal room.
    Only maximal fillings are tried: a VM that fits here could only do worse later.
    """
    sizes = sorted({i.memory for i in items}, reverse=True)
    need = tuple(sum(1 for i in items if i.memory == s) for s in sizes)
    hosts = sorted(bins, key=lambda b: (-b[1], b[0]))
    rooms = [free for _, free in hosts]
    room_after = [sum(rooms[k:]) for k in range(len(rooms) + 1)]
    hopeless: set[tuple[int, tuple[int, ...]]] = set()
    taken: list[tuple[int, ...]] = []
    nodes = 0

    def fillings(room: int, left: tuple[int, ...], j: int = 0) -> Iterator[tuple[int, ...]]:
        if j == len(sizes):
            yield ()
            return
        most = min(left[j], room // sizes[j])
        for take in range(most, -1, -1):
            for rest in fillings(room - take * sizes[j], left, j + 1):
                if take < most and room - take * sizes[j] - _load(rest, sizes[j + 1:]) \
                        >= sizes[j]:
                    continue  # another VM of this size still fits: not maximal
                yield (take, *rest)

    def go(k: int, left: tuple[int, ...]) -> bool | None:
        nonlocal nodes
        if not any(left):
            return True
        if k == len(rooms) or _load(left, sizes) > room_after[k] or (k, left) in hopeless:
            return False
        nodes += 1
        if nodes > budget:
            return None
        for filling in fillings(rooms[k], left):
            found = go(k + 1, tuple(n - t for n, t in zip(left, filling, strict=True)))
            if found is None:
                return None
            if found:
                taken.append(filling)
                return True
        hopeless.add((k, left))
        return False

    found = go(0, need)
    if found is None:
        return Decision(Verdict.UNKNOWN, why=f"search stopped after {budget} nodes")
    if not found:
        return Decision(Verdict.NO_PLAN, why="exhaustive search found no placement")
    queues = {s: sorted(i.vm for i in items if i.memory == s) for s in sizes}
    placement: Placement = {}
    for (uuid, _), filling in zip(hosts, reversed(taken), strict=False):
        for s, count in zip(sizes, filling, strict=True):
            for _ in range(count):
                placement[queues[s].pop(0)] = uuid
    return Decision(Verdict.FITS, placement)


def _load(counts: Sequence[int], sizes: Sequence[int]) -> int:
    return sum(n * s for n, s in zip(counts, sizes, strict=True))


def plan_for(problem: Problem, failed: Iterable[str], budget: int = 20_000) -> Decision:
    """The plan (or proof there is none) for the failure of the hosts ``failed``."""
    down = frozenset(failed)
    return decide(problem.items_for(down), problem.bins_for(down), budget)
