"""Rebalancing: moving VMs back to their homes after the hosts they lost return.

Rules:

* A VM's **home** is the host the pool database records it on: where the
  operator (or the pool file) last put it. HA's restarts are not recorded
  there, so a VM restarted elsewhere after its host failed still has that
  host as its home.
* Only protected and best-effort VMs that run, are agile and are away from a
  home that is live, enabled and offers their device classes are moved;
  unprotected VMs stay put.
* One move at a time (:func:`next_move`), in restart order: protected before
  best-effort, then ascending ``order``, then name. A move is a candidate only
  if its home has the VM's memory free and, after it, the plan covers at least
  as many failures as it must: the configured number, or when the pool is
  already short, no fewer than it covers now. A VM that cannot go home now is
  skipped, not waited for.
* :func:`moves` plans the whole sequence on the view, each move applied
  before choosing the next, each VM moved at most once: what ``--dry-run``
  shows, and what the verb carries out (re-checked on the live view before
  every move).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from hacluster.core.pool import VM, Pool, Power, Priority, is_agile
from hacluster.core.recovery import tolerance

RANK = {Priority.RESTART: 0, Priority.BEST_EFFORT: 1}


@dataclass(frozen=True)
class Move:
    vm: str
    source: str
    target: str


def homes(recorded: Pool) -> dict[str, str]:
    """Every VM's home: where the pool database records it running."""
    return {vm.uuid: vm.resident for vm in recorded.vms if vm.resident is not None}


def next_move(view: Pool, home: Mapping[str, str], live: Iterable[str] | None,
              skip: frozenset[str] = frozenset()) -> Move | None:
    """The first VM (restart order) that may go home now, or None."""
    live_set = None if live is None else frozenset(live)
    usable = {h.uuid for h in view.hosts
              if h.enabled and (live_set is None or h.uuid in live_set)}
    need = _needed(view, live_set)
    for vm in sorted(view.vms, key=_rank):
        target = home.get(vm.uuid)
        if (vm.uuid in skip or vm.priority not in RANK or not vm.running or vm.resident is None
                or target is None or target == vm.resident or target not in usable
                or view.free_memory(target) < vm.memory or not is_agile(view, vm)
                or not view.can_host(vm, target)):
            continue
        if tolerance(moved(view, vm, target), live_set).max_failures >= need:
            return Move(vm.uuid, vm.resident, target)
    return None


def moves(view: Pool, home: Mapping[str, str], live: Iterable[str] | None) -> list[Move]:
    """Every move :func:`next_move` makes in turn, each VM at most once."""
    live_set = None if live is None else frozenset(live)
    done: list[Move] = []
    while (move := next_move(view, home, live_set, frozenset(m.vm for m in done))) is not None:
        done.append(move)
        view = moved(view, view.vm(move.vm), move.target)
    return done


def moved(pool: Pool, vm: VM, target: str) -> Pool:
    return pool.with_vm(replace(vm, power=Power.RUNNING, resident=target))


def _needed(view: Pool, live: frozenset[str] | None) -> int:
    """Failures the plan must still cover after a move."""
    return min(view.host_failures_to_tolerate, tolerance(view, live).max_failures)


def _rank(vm: VM) -> tuple[int, int, str, str]:
    return (RANK.get(vm.priority, 2), vm.order, vm.name, vm.uuid)
