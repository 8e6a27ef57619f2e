"""The chaos checker: a verdict on a chaos run from what the pool left behind.

Rules:

* Evidence is the runner's journal, the guests' own disks (the VM SR) and the
  nodes' event logs; never a daemon's word about what it runs.
* **single-run** (safety): two runs of one VM whose disk records overlap in
  time are a violation, whatever the faults were.
* **recovery** (liveness): a protected VM whose run ended must run again;
  every protected VM must be running when the run ends; the pool must
  settle after every fault (the runner journals ``unsettled`` when it did
  not). Each is a violation.
* For every fault the checker measures its *recovery*: the time from the
  injection until every protected VM whose run ended in the fault's window
  (from its injection to the next one) ran again; a fault that interrupted
  no protected VM has none.
* The verdict is a report (text) and the data the timeline draws.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacluster.chaos.journal import JOURNAL, read_journal
from hacluster.chaos.runner import FRESH, protected_vms
from hacluster.lab.local import read_events
from hacluster.lab.workloads import runs
from hacluster.model import poolfile
from hacluster.vm.records import Instance, double_runs

LAB = "lab"  # the lab directory inside a chaos run's directory
SLACK = 0.5  # a guest's last record before the fault that ended it


@dataclass
class FaultOutcome:
    n: int
    kind: str
    what: str
    injected: float
    healed: float
    window_end: float
    hosts: list[int] = field(default_factory=list)  # the hosts it struck
    settled: float | None = None  # seconds from heal to settled
    fenced: list[int] = field(default_factory=list)
    affected: list[str] = field(default_factory=list)
    recovery: float | None = None  # injection to every affected VM running again


@dataclass
class Verdict:
    params: dict[str, Any]
    begin: float
    end: float
    faults: list[FaultOutcome]
    violations: list[str]
    runs: dict[str, list[Instance]]
    events: list[dict[str, Any]]
    host_names: dict[str, int]
    protected: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def recoveries(self) -> list[float]:
        """The recovery times of the faults that stopped protected VMs, in fault order."""
        return [f.recovery for f in self.faults if f.recovery is not None]

    def at(self, t: float) -> str:
        return offset(t, self.begin)

    def report(self) -> str:
        p = self.params
        lines = [f"chaos run: backend {p.get('backend')}, {p.get('hosts')} hosts, "
                 f"T={p.get('timeout')}s, seed {p.get('seed')}, rate {p.get('rate')}/min, "
                 f"{self.end - self.begin:.0f}s, {len(self.faults)} faults"]
        if p.get("unsafe_watchdog_delay") is not None:
            lines.append(f"UNSAFE watchdog {p['unsafe_watchdog_delay']}s late (planted fault)")
        lines.append("")
        what = max([len("fault"), *(len(f.what) for f in self.faults)])
        vms = max([len("affected VMs"), *(len(",".join(f.affected)) for f in self.faults)])
        lines.append(f"{'#':>3}  {'at':>8}  {'fault':<{what}}  {'fenced':<7} "
                     f"{'affected VMs':<{vms}}  {'recovery':>8}")
        for f in self.faults:
            recovery = f"{f.recovery:.2f}s" if f.recovery is not None else "-"
            lines.append(f"{f.n:>3}  {self.at(f.injected):>8}  {f.what:<{what}}  "
                         f"{','.join(map(str, f.fenced)) or '-':<7} "
                         f"{','.join(f.affected) or '-':<{vms}}  {recovery:>8}")
        times = self.recoveries
        lines.append("")
        if times:
            lines.append(f"recovery over {len(times)} faults that stopped protected VMs: "
                         f"{median_max(times)}")
        starts = sum(len(r) for r in self.runs.values())
        lines.append(f"checked {starts} guest runs of {len(self.runs)} VMs on their disks, "
                     f"{len(self.events)} node events")
        lines += [f"VIOLATION {v}" for v in self.violations]
        lines.append(f"verdict: {len(self.violations)} violation(s)")
        return "\n".join(lines)


def median_max(times: Sequence[float]) -> str:
    """Recovery times as reports print them (``times`` must not be empty)."""
    return f"median {statistics.median(times):.2f}s, max {max(times):.2f}s"


def offset(t: float, begin: float) -> str:
    """A wall-clock time as seconds into the run, as reports print it."""
    return f"t+{t - begin:.1f}s"


def _windows(journal: list[dict[str, Any]], end: float) -> list[FaultOutcome]:
    faults: dict[int, FaultOutcome] = {}
    for record in journal:
        n = int(record.get("n", -1))
        if record["event"] == "inject":
            faults[n] = FaultOutcome(n, record["kind"], record["what"], record["time"],
                                     record["time"], end, hosts=list(record["hosts"]))
        elif record["event"] == "heal" and n in faults:
            faults[n].healed = record["time"]
        elif record["event"] == "settled" and n in faults:
            faults[n].settled = record["took"]
    ordered = sorted(faults.values(), key=lambda f: f.injected)
    for earlier, later in itertools.pairwise(ordered):
        earlier.window_end = later.injected
    return ordered


def _overlap(a: Instance, b: Instance) -> float:
    return min(a.last, b.last) - max(a.first, b.first)


def check(directory: Path) -> Verdict:
    """The verdict on the chaos run in ``directory`` (see the module rules)."""
    journal = read_journal(directory / JOURNAL)
    if not journal or journal[0]["event"] != "begin":
        raise ValueError(f"{directory / JOURNAL}: not a chaos journal (no 'begin' record)")
    params = journal[0]
    begin = float(params["time"])
    end = float(journal[-1]["time"])
    root = directory / LAB
    protected = protected_vms(root)
    pool = poolfile.load(root / "pool.toml").pool
    host_names = {host.name: index for index, host in enumerate(pool.hosts)}
    vm_runs = runs(root)
    events = read_events(root)
    faults = _windows(journal, end)
    violations: list[str] = []

    def at(t: float) -> str:
        return offset(t, begin)

    for vm, instances in sorted(vm_runs.items()):
        for a, b in double_runs(instances):
            violations.append(
                f"single-run: {vm} ran on {a.host} ({at(a.first)}..{at(a.last)}) and on "
                f"{b.host} ({at(b.first)}..{at(b.last)}) at once, for {_overlap(a, b):.2f}s")
    for vm in protected:
        instances = vm_runs.get(vm, [])
        if not instances:
            violations.append(f"recovery: protected VM {vm} never ran")
            continue
        for run in instances:
            # the runs that outlived this one: the VM ran again (or, if one
            # began first, ran twice, which single-run reports)
            resumed = [i for i in instances if i is not run and i.last > run.last]
            ended = run.last < end - FRESH
            if not ended:
                continue
            if not resumed:
                violations.append(f"recovery: protected VM {vm} stopped on {run.host} at "
                                  f"{at(run.last)} and never ran again")
            # the latest fault injected before the run's last record (a guest
            # writes every 0.1 s, so its last record may precede the fault a little)
            struck = [f for f in faults if f.injected - SLACK <= run.last]
            if struck:
                fault = struck[-1]
                fault.affected.append(vm)
                if resumed:
                    took = max(0.0, min(i.first for i in resumed) - fault.injected)
                    fault.recovery = max(fault.recovery or 0.0, took)
    for record in journal:
        if record["event"] == "unsettled":
            violations.append(f"recovery: the pool did not settle within {record['limit']}s "
                              f"after fault {record['n']} ({record.get('pool', '')})")
    for fault in faults:
        fault.affected = sorted(set(fault.affected))
        fault.fenced = sorted({int(e["host"]) for e in events
                               if e["event"] in ("fence", "watchdog")
                               and fault.injected <= e["time"] < fault.window_end})
    return Verdict(params, begin, end, faults, violations, vm_runs, events, host_names,
                   protected)
