"""Who survives a fault: the pure decision every host computes from views.

A *view* is what one host reports about itself: the hosts it hears on the
network (hbdomain), the hosts it sees updating their slot (sfdomain) and
whether it has statefile access itself. Rules, in the order applied:

1. **Survival rule 1** (statefile mode): if I have statefile access, my
   sfdomain within the liveset is non-empty and every host in it is also in my
   hbdomain, I survive. I propose the largest partition (rule 2 below) when it
   keeps me, so that winners with the same views propose alike; otherwise the
   liveset cut to hosts in both my domains.
2. **Largest partition** (both modes): among the liveset hosts with a fresh
   view (and, in statefile mode, statefile access), partitions are the
   connected components of the graph of hosts that hear each other. Where views
   disagree and a component is not a clique, the deterministic merge drops its
   host with the fewest mutual neighbours (ties: the highest index) until it
   is. The largest resulting partition survives, ties to the one holding the
   lowest index. Clustered mode also needs
   quorum: more than half the configured hosts, or exactly half including the
   lowest liveset index.
3. **Survival rule 2** (statefile mode): a losing host still survives if it
   and every liveset host has lost the statefile and it hears every liveset
   host; in that mode no master exists and any further failure fences all.
4. Otherwise the host fences itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hacluster.core.messages import HostSet


@dataclass(frozen=True)
class View:
    hbdomain: HostSet
    sfdomain: HostSet
    statefile_access: bool


@dataclass(frozen=True)
class Decision:
    survive: bool
    liveset: HostSet  # the proposed liveset when surviving
    rule: str
    rule2: bool = False


def drop_order(host: int, neighbours: int) -> tuple[int, int]:
    """Sort key of the host dropped first from a component: fewest neighbours,
    then highest index."""
    return (neighbours, -host)


def partition_rank(side: HostSet) -> tuple[int, int]:
    """Sort key of the winning partition: largest, ties to the lowest index."""
    return (-len(side), min(side))


def _components(alive: set[int], neighbours: dict[int, set[int]]) -> list[set[int]]:
    seen: set[int] = set()
    parts = []
    for start in sorted(alive):
        if start in seen:
            continue
        part, todo = set(), [start]
        while todo:
            h = todo.pop()
            if h not in part:
                part.add(h)
                todo.extend(neighbours[h] - part)
        seen |= part
        parts.append(part)
    return parts


def _reduce_to_clique(part: set[int], neighbours: dict[int, set[int]]) -> frozenset[int]:
    alive = set(part)
    degree = {h: len(neighbours[h] & alive) for h in alive}
    while any(degree[h] != len(alive) - 1 for h in alive):
        victim = min(alive, key=lambda h: drop_order(h, degree[h]))
        alive.remove(victim)
        for h in neighbours[victim] & alive:
            degree[h] -= 1
    return frozenset(alive)


def largest_partition(candidates: HostSet, hb_of: Mapping[int, HostSet]) -> HostSet:
    """The surviving partition among ``candidates`` (see rule 2 in the module doc).

    Partitions are the connected components of the mutual-hearing graph; each
    is cut to a clique by dropping its least-connected hosts (the deterministic
    merge when views disagree); the best clique by :func:`partition_rank` wins.
    """
    alive = set(candidates)
    neighbours = {
        h: {p for p in alive if p != h and p in hb_of.get(h, ()) and h in hb_of.get(p, ())}
        for h in alive
    }
    cliques = [_reduce_to_clique(part, neighbours) for part in _components(alive, neighbours)]
    return min(cliques, key=partition_rank) if cliques else frozenset()


def rule2_applies(me: int, liveset: HostSet, views: Mapping[int, View]) -> bool:
    """Survival rule 2: the whole liveset lost the statefile and I hear all of it."""
    mine = views[me]
    if mine.statefile_access or not liveset <= mine.hbdomain:
        return False
    return all(p in views and not views[p].statefile_access for p in liveset)


def rule1_applies(me: int, liveset: HostSet, mine: View) -> bool:
    """Survival rule 1: everyone I see on the statefile, I also hear."""
    sfd = mine.sfdomain & liveset
    return mine.statefile_access and bool(sfd) and sfd <= mine.hbdomain


def decide_statefile(me: int, liveset: HostSet, views: Mapping[int, View]) -> Decision:
    """Statefile-mode survival for ``me`` given the fresh views it holds."""
    mine = views[me]
    if rule1_applies(me, liveset, mine):
        # rule 1 says I survive. The proposal is the merged partition, which
        # winners compute alike from the same views; a host I see on both
        # channels that has not reported its view yet is presumed to see
        # what I see, so that a slow report never gets a live host removed.
        both = liveset & mine.hbdomain & mine.sfdomain
        presumed = {**{p: mine for p in both}, **views}
        candidates = frozenset(p for p in both if presumed[p].statefile_access)
        winners = largest_partition(
            candidates, {p: presumed[p].hbdomain & liveset for p in candidates})
        return Decision(True, winners if me in winners else both, "survival rule 1")
    candidates = frozenset(p for p in liveset if p in views and views[p].statefile_access)
    winners = largest_partition(candidates, {p: views[p].hbdomain & liveset for p in candidates})
    if me in winners:
        return Decision(True, winners, "largest partition")
    if rule2_applies(me, liveset, views):
        return Decision(True, liveset & mine.hbdomain, "survival rule 2", rule2=True)
    if not mine.statefile_access:
        return Decision(False, winners, "lost the statefile while others kept it")
    return Decision(False, winners, f"not in the largest partition {sorted(winners)}")


def quorate(side: HostSet, liveset: HostSet, configured: int) -> bool:
    """Clustered-mode quorum: a strict majority, or exactly half with the lowest index."""
    if 2 * len(side) > configured:
        return True
    return 2 * len(side) == configured and bool(liveset) and min(liveset) in side


def cold_start_quorum(configured: int) -> int:
    """Hosts a clustered pool needs to form from cold: n/2 + 1 (rounded down)."""
    return configured // 2 + 1


def decide_clustered(
    me: int, liveset: HostSet, configured: int, views: Mapping[int, View]
) -> Decision:
    """Clustered-mode survival: largest mutually-hearing side, if quorate."""
    candidates = frozenset(p for p in liveset if p in views)
    winners = largest_partition(candidates, {p: views[p].hbdomain & liveset for p in candidates})
    if me not in winners:
        return Decision(False, winners, f"not in the largest partition {sorted(winners)}")
    if not quorate(winners, liveset, configured):
        return Decision(False, winners, f"no quorum: {len(winners)} of {configured} hosts")
    return Decision(True, winners, "quorum")
