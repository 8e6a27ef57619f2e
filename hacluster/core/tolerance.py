"""How many host failures a pool can take: ``max_host_failures_to_tolerate``.

Rules:

* r failures are tolerated when *every* set F of r live hosts can fail and a
  plan (:mod:`hacluster.core.planner`) places their protected VMs and the
  pending ones on the rest. This is monotone: fewer failures leave fewer VMs
  and more room. The answer is at most ``cap`` (default n - 1).
* **Counting conditions.** For each size level s (every distinct VM size),
  with g the gcd of the sizes >= s, and over the VMs of F plus the pending:

  - necessary: the VMs of size >= s fit by memory into the hosts outside F
    with room >= s (each taking at most ``room // g * g``), and by number
    (each taking at most ``room // s`` of them); a set violating one has no
    plan (proven);
  - sufficient: their memory is at most what best-fit decreasing is sure to
    use before it can fail on a VM of size s, ``room - waste`` per host, where
    ``waste`` is the largest value below s congruent to room modulo g. A set
    meeting it at every level is placed by best-fit decreasing (proven: when
    a VM of size s finds no host, every host has less than s left and holds
    only VMs of size >= s).

  Each condition reads ``sum over F of w(h) <= limit``, so the worst set of
  size r is the r hosts of largest weight: both bounds take O(levels * n log n).
  With divisible sizes (each size divides the larger ones) the two coincide
  and the answer is exact at once.
* **Search.** Between the two bounds, sets that break a sufficient condition
  are enumerated by branch and bound over classes of identical hosts (same
  room and VM sizes: a symmetry, one representative per choice of counts),
  heaviest first, each decided by :func:`planner.decide`. A set proven to
  have no plan ends the search with an exact answer; when the node budget runs
  out, or a set stays undecided, the answer is the last proven r, marked as a
  bound. The answer never claims a plan that does not exist.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from hacluster.core.planner import PlanHost, Problem, Verdict, decide


@dataclass(frozen=True)
class Condition:
    """``sum(weights[h] for h in F) <= limit``; ``necessary`` or sufficient."""

    name: str
    weights: tuple[int, ...]  # per host, in problem order
    limit: int
    necessary: bool

    def worst(self, r: int) -> list[int]:
        """The host indices of a heaviest set of size r (ties by index)."""
        order = sorted(range(len(self.weights)), key=lambda h: (-self.weights[h], h))
        return order[:r]

    def largest_r(self, cap: int) -> int:
        """The largest r <= cap at which the heaviest set meets the condition, or -1."""
        total, best = 0, -1
        for r, w in enumerate([0, *sorted(self.weights, reverse=True)][: cap + 1]):
            total += w
            if total > self.limit:
                break
            best = r
        return best

    def holds(self, hosts: frozenset[int]) -> bool:
        return sum(self.weights[h] for h in hosts) <= self.limit


def _separable(name: str, need: list[int], give: list[int], fixed: int,
               necessary: bool) -> Condition:
    """``fixed + sum_{F} need <= sum_{not F} give`` as ``sum_F (need + give) <= limit``."""
    return Condition(name, tuple(n + g for n, g in zip(need, give, strict=True)),
                     sum(give) - fixed, necessary)


def conditions(problem: Problem) -> list[Condition]:
    """The counting conditions of ``problem`` at every size level."""
    sizes = sorted({i.memory for h in problem.hosts for i in h.movable}
                   | {i.memory for i in problem.pending}, reverse=True)
    found: list[Condition] = []
    gcd = 0
    for s in sizes:
        gcd = math.gcd(gcd, s)
        big = [[i.memory for i in h.movable if i.memory >= s] for h in problem.hosts]
        pending = [i.memory for i in problem.pending if i.memory >= s]
        rooms = [h.free for h in problem.hosts]
        mem = [sum(b) for b in big]
        fits = [r // gcd * gcd if r >= s else 0 for r in rooms]
        sure = [r - _waste(r, s, gcd) if r >= s else 0 for r in rooms]
        found.append(_separable(f"memory of VMs >= {s} MiB", mem, fits, sum(pending), True))
        found.append(_separable(f"number of VMs >= {s} MiB", [len(b) for b in big],
                                [r // s for r in rooms], len(pending), True))
        found.append(_separable(f"best-fit safe at {s} MiB", mem, sure, sum(pending), False))
    return found


def _waste(room: int, size: int, gcd: int) -> int:
    """The largest value below ``size`` congruent to ``room`` modulo ``gcd``."""
    return (size - 1) - ((size - 1 - room) % gcd)


@dataclass(frozen=True)
class Tolerance:
    max_failures: int  # -1: the pending VMs do not fit even now
    exact: bool
    upper: int  # the true answer is at most this
    counterexample: tuple[str, ...] | None  # a set of max_failures + 1 hosts with no plan
    why: str
    sets_decided: int = 0  # failure sets the search had to decide one by one

    @property
    def label(self) -> str:
        return "exact" if self.exact else "bound"


def max_failures(problem: Problem, cap: int | None = None, budget: int = 200_000,
                 set_budget: int = 2_000) -> Tolerance:
    """The largest r such that every r live hosts can fail with a plan."""
    n = len(problem.hosts)
    top = max(0, n - 1) if cap is None else max(0, min(cap, n - 1))
    uuids = [h.uuid for h in problem.hosts]

    def named(hosts: list[int] | frozenset[int]) -> tuple[str, ...]:
        return tuple(sorted(uuids[h] for h in hosts))

    now = decide(problem.pending, problem.bins_for(()), set_budget)
    if now.verdict is not Verdict.FITS:
        return Tolerance(-1, now.verdict is Verdict.NO_PLAN, -1 if now.verdict is
                         Verdict.NO_PLAN else 0, (), "the VMs waiting for a host do not fit: "
                         + now.why)
    conds = conditions(problem)
    necessary = [c for c in conds if c.necessary]
    sufficient = [c for c in conds if not c.necessary]
    upper, broken = top, None
    for c in necessary:
        r = c.largest_r(top)
        if r < upper:
            upper, broken = r, c
    lower = min([c.largest_r(top) for c in sufficient], default=top)
    lower = min(max(lower, 0), upper)  # 0 failures are proven: the pending VMs fit
    search = _Search(problem, sufficient, budget, set_budget)
    for r in range(lower + 1, upper + 1):
        found = search.refute(r)
        if found is not None:
            return Tolerance(r - 1, True, upper, named(found),
                             f"{r} failures of {', '.join(named(found))} leave no plan",
                             search.decided)
        if search.exhausted or search.undecided:
            why = ("search budget ran out" if search.exhausted
                   else f"{search.undecided} failure sets undecided")
            return Tolerance(r - 1, False, upper, None,
                             f"proven for {r - 1}; {why} at {r} (at most {upper})",
                             search.decided)
    if broken is not None and upper < top:
        witness = named(broken.worst(upper + 1))
        why = f"{upper + 1} failures of {', '.join(witness)} leave no plan ({broken.name})"
        return Tolerance(upper, True, upper, witness, why, search.decided)
    return Tolerance(upper, True, upper, None,
                     f"every {upper} failures leave a plan (the most this pool can claim)",
                     search.decided)


class _Search:
    """Looks for a set of r hosts with no plan among those counting cannot clear."""

    def __init__(self, problem: Problem, sufficient: list[Condition], budget: int,
                 set_budget: int) -> None:
        self.problem = problem
        self.sufficient = sufficient
        self.budget = budget
        self.set_budget = set_budget
        self.nodes = 0
        self.decided = 0
        self.undecided = 0
        self.exhausted = False
        self.classes = _classes(problem.hosts)

    def refute(self, r: int) -> list[int] | None:
        for hosts in self._suspects(r):
            self.decided += 1
            failed = [self.problem.hosts[h].uuid for h in hosts]
            verdict = decide(self.problem.items_for(failed), self.problem.bins_for(failed),
                             self.set_budget).verdict
            if verdict is Verdict.NO_PLAN:
                return hosts
            if verdict is Verdict.UNKNOWN:
                self.undecided += 1
        return None

    def _suspects(self, r: int) -> Iterator[list[int]]:
        """Every set of r hosts (one per symmetry class choice) breaking a sufficient
        condition, heaviest first."""
        classes = self.classes
        conds = self.sufficient
        weight = [[c.weights[members[0]] for members in classes] for c in conds]
        # best[c][k][m]: the largest weight m more hosts from classes k.. can add
        best: list[list[list[int]]] = []
        for ci in range(len(conds)):
            table: list[list[int]] = []
            for k in range(len(classes) + 1):
                ws = sorted((weight[ci][j] for j in range(k, len(classes))
                             for _ in classes[j]), reverse=True)
                sums = [0]
                for w in ws[:r]:
                    sums.append(sums[-1] + w)
                sums += [sums[-1]] * (r + 1 - len(sums))
                table.append(sums)
            best.append(table)
        counts = [0] * len(classes)

        def go(k: int, left: int, totals: list[int]) -> Iterator[list[int]]:
            if self.nodes >= self.budget:
                self.exhausted = True
                return
            self.nodes += 1
            if not any(totals[ci] + best[ci][k][left] > conds[ci].limit
                       for ci in range(len(conds))):
                return  # every completion is cleared by counting
            if left == 0:
                yield [h for j, c in enumerate(counts) for h in classes[j][:c]]
                return
            if k == len(classes):
                return
            for take in range(min(left, len(classes[k])), -1, -1):
                counts[k] = take
                yield from go(k + 1, left - take,
                              [totals[ci] + take * weight[ci][k] for ci in range(len(conds))])
            counts[k] = 0

        yield from go(0, r, [0] * len(conds))


def _classes(hosts: tuple[PlanHost, ...]) -> list[list[int]]:
    """Hosts grouped by (room, VM sizes): interchangeable for planning. Heaviest first."""
    groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for index, host in enumerate(hosts):
        key = (host.free, tuple(sorted((i.memory for i in host.movable), reverse=True)))
        groups.setdefault(key, []).append(index)
    return sorted(groups.values(), key=lambda members: (-_heft(hosts[members[0]]), members[0]))


def _heft(host: PlanHost) -> int:
    return host.demand + host.free
