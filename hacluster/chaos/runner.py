"""Runs a fault schedule against a real pool and journals what it did.

Rules:

* The runner acts and records; it never judges. The checker
  (:mod:`hacluster.chaos.checker`) reads its journal, the guests' disks and
  the nodes' event logs afterwards.
* The pool is *settled* when every host is ``NORMAL`` in one full liveset
  with exactly one master and every protected VM is running: its guest wrote
  to its disk within :data:`FRESH` seconds and has not ended.
* The runner waits for a settled pool before the first fault. Then, fault
  after fault: wait the fault's gap (stop instead if that would pass the
  duration), resolve its target, inject, hold, heal, start again every host
  whose daemon is gone, and wait for the pool to settle (starting hosts that
  die meanwhile) for at most ``settle_limit`` seconds.
* Each backend offers its own faults (see :data:`hacluster.chaos.schedule.KINDS`);
  ``pause`` stops a host's daemon (its VMs run on), ``freeze`` a whole
  container.
* Operations (:data:`hacluster.chaos.schedule.OPERATIONS`) go through hactl
  as an operator's would; each answer is journaled (``operation``: verb, ok,
  what it said). A refusal (the plan, a VM HA is starting) is an answer, not
  a failure. A suspended VM is resumed after its hold with ``--force``, tried
  again until it runs or the settle limit passes: the checker then judges.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hacluster.chaos.journal import Journal
from hacluster.chaos.schedule import MASTER, Fault
from hacluster.lab import members
from hacluster.lab.local import LabError
from hacluster.lab.poll import wait_until
from hacluster.lab.workloads import VM_SR
from hacluster.model import poolfile
from hacluster.vm.records import ENDINGS, last_record

FRESH = 1.0  # a running guest writes a record every 0.1 s
POLL = 0.2


class ChaosLab(Protocol):
    """What the runner needs of a lab backend (more is looked up per fault)."""

    root: Path

    def status(self) -> list[dict[str, Any]]: ...
    def running(self, index: int) -> bool: ...
    def restart(self, index: int) -> int: ...
    def kill(self, index: int) -> None: ...
    def pause(self, index: int, seconds: float) -> None: ...


def protected_vms(root: Path) -> list[str]:
    """The uuids of the VMs the lab's pool protects."""
    pool = poolfile.load(root / "pool.toml").pool
    return sorted(vm.uuid for vm in pool.vms if vm.priority.protected)


def vm_running(disk: Path, now: float) -> bool:
    last = last_record(disk)
    return last is not None and last.event not in ENDINGS and now - last.time < FRESH


@dataclass
class Runner:
    lab: ChaosLab
    hosts: int
    journal: Journal
    settle_limit: float

    def __post_init__(self) -> None:
        self.protected = protected_vms(self.lab.root)

    # ------------------------------------------------------------ observing
    def settled(self) -> bool:
        rows = self.lab.status()
        everyone = list(range(self.hosts))
        if any(r.get("phase") != "NORMAL" or r.get("liveset") != everyone for r in rows):
            return False
        if sum(bool(r.get("master")) for r in rows) != 1:
            return False
        now = time.time()
        return all(vm_running(self.lab.root / VM_SR / f"{vm}.disk", now)
                   for vm in self.protected)

    def describe(self) -> str:
        """Why the pool is not settled, in a few words (for the journal)."""
        rows = self.lab.status()
        hosts = ", ".join(f"{r['host']} {r.get('phase')}{' master' if r.get('master') else ''}"
                          for r in rows)
        now = time.time()
        down = [vm for vm in self.protected
                if not vm_running(self.lab.root / VM_SR / f"{vm}.disk", now)]
        waits = "".join(f"; host {r['host']} waits: {'; '.join(r['waiting'])}"
                        for r in rows if r.get("waiting"))
        return f"hosts: {hosts}; protected VMs not running: {down or 'none'}{waits}"

    def master(self) -> int:
        rows = self.lab.status()
        masters = [r["host"] for r in rows if r.get("master")]
        return int(masters[0]) if masters else 0

    # ------------------------------------------------------------ acting
    def restart_dead(self) -> None:
        for index in range(self.hosts):
            if not self.lab.running(index):
                self.lab.restart(index)
                self.journal.write("restart", host=index)

    def settle(self, limit: float) -> float | None:
        """Start dead hosts until the pool settles; the seconds it took, or None."""
        def restarted_and_settled() -> bool:
            self.restart_dead()
            return self.settled()

        return wait_until(restarted_and_settled, limit, POLL)

    def inject(self, fault: Fault, target: int) -> None:
        """Inject ``fault`` on ``target``, hold it, heal it."""
        lab: Any = self.lab  # backend-specific faults are looked up by kind
        kind, hold = fault.kind, fault.hold
        if fault.operation:
            self.operate(fault, target)
        elif kind == "kill":
            lab.kill(target)
            time.sleep(hold)
        elif kind == "pause":
            lab.pause(target, hold)
        elif kind == "freeze":
            lab.freeze(target, hold)
        elif kind == "restart":
            lab.restart_container(target)
        else:
            if kind == "partition":
                lab.partition([list(g) for g in fault.groups])
            elif kind == "one-way":
                lab.drop_from(target, fault.peer)
            elif kind == "storage":
                lab.storage(target, fault.mode)
            elif kind == "disconnect":
                lab.disconnect(target)
            else:
                raise ValueError(f"unknown fault kind {kind!r}")
            time.sleep(hold)
            if kind == "storage":
                lab.storage(target, "ok")
            elif kind == "disconnect":
                lab.reconnect(target)
            else:
                lab.heal()

    def operate(self, fault: Fault, target: int) -> None:
        """An operator's lifecycle operation through hactl (see the module rules)."""
        vm = self.vm_of(fault)
        if fault.kind == "rebalance":
            self.hactl("pool-ha-rebalance")
        elif not vm:
            self.journal.write("operation", verb=fault.kind, ok=False, said="no protected VM")
        elif fault.kind == "migrate":
            self.hactl("vm-migrate", f"uuid={vm}", f"host=host{target}")
        elif fault.kind == "reboot":
            self.hactl("vm-reboot", f"uuid={vm}")
        elif fault.kind == "suspend" and self.hactl("vm-suspend", f"uuid={vm}"):
            time.sleep(fault.hold)
            wait_until(lambda: self.hactl("vm-resume", f"uuid={vm}", "--force"),
                       self.settle_limit, 1.0)

    def vm_of(self, fault: Fault) -> str:
        """The protected VM an operation's index names ("" if the pool has none)."""
        return self.protected[fault.vm % len(self.protected)] if self.protected else ""

    def hactl(self, *words: str) -> bool:
        """Run one hactl call on the lab's pool; journal its answer; did it succeed?"""
        try:
            said = members.hactl(self.lab, *words)
            ok = True
        except LabError as error:
            said, ok = str(error), False
        self.journal.write("operation", verb=words[0], args=list(words[1:]), ok=ok,
                           said=said)
        return ok

    def run(self, faults: Iterable[Fault], duration: float) -> int:
        """Inject faults until ``duration`` is spent; the number injected."""
        start = time.monotonic()
        count = 0
        for number, fault in enumerate(faults, 1):
            if time.monotonic() - start + fault.gap >= duration:
                break
            time.sleep(fault.gap)
            target = self.master() if fault.target == MASTER else int(fault.target)
            hit = sorted(h for g in fault.groups for h in g) if fault.groups else [target]
            self.journal.write("inject", n=number, kind=fault.kind, hosts=hit,
                               what=fault.describe(target, self.vm_of(fault) or None),
                               hold=round(fault.hold, 3))
            self.inject(fault, target)
            self.journal.write("heal", n=number)
            count += 1
            took = self.settle(self.settle_limit)
            if took is None:
                self.journal.write("unsettled", n=number, limit=self.settle_limit,
                                   pool=self.describe())
            else:
                self.journal.write("settled", n=number, took=round(took, 3))
        return count
