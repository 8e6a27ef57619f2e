"""The master's duties, pure: take the pool over, watch the hosts, restart VMs.

Rules (spec sections 7 and 9):

* Pure: every input carries ``now`` (the master's monotonic clock) and every
  output is plain data. The daemon (:mod:`hacluster.node.master`) and the
  simulator (:mod:`hacluster.sim.cluster`) drive this same code; they differ
  only in how they ask hosts and start VMs.
* A **pass** (each heartbeat interval but at most once a second,
  :func:`pass_interval`, and at once after a liveset commit or a start's
  answer) is one :class:`Surveyed` input: the committed liveset,
  every live host's answer to "what do you run, which VMs exited since
  :meth:`Duties.cursor`" (``None``: it did not answer), and the pool
  database's view.
* **Taking over** is the first pass: the view starts from the pool database,
  then what the hosts report wins. A VM reported running is running there; a
  VM the view places on a live host that answered without it has crashed; a
  VM on a host outside the liveset is on a failed host. A live host that does
  not answer keeps its VMs as they were: nothing it may run is started
  elsewhere. A VM the database records halted or suspended (the operator's
  doing, :mod:`hacluster.core.pooldb`) stays so unless a host reports it
  running. Exits a host recorded before the take-over are history. A host
  silent at the take-over is taken over by the same rule when it first
  answers (until then its VMs stay as they were).
* A host whose answer numbers its exits below the cursor restarted its
  agent: its cursor starts again from 0.
* After the take-over each pass feeds, in order: the exits the hosts report
  (a VM stopped by the operator is not an exit; the exit of a VM the pool
  database does not know is only reported), the hosts that failed since
  the last pass, the unsure starts whose host left the liveset, then
  :class:`~hacluster.core.restarts.Pass` with the liveset.
* A start whose outcome is unknown (``StartAnswered`` with ``Outcome.UNSURE``:
  the request may have arrived) counts as finished only when that host
  answers a survey (running there or not), or leaves the liveset.
* Before the take-over, failed hosts and a restart pause are remembered;
  every other input is dropped (the take-over finds its effects).
* The tolerance (failures the plan covers) is recomputed whenever the view or
  the liveset changes; a change of its answer is output as :class:`PlanChanged`,
  with an ``ha_pool_overcommitted`` alert when the pool becomes overcommitted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from hacluster.core.pool import Pool, Power
from hacluster.core.recovery import overcommitted, tolerance
from hacluster.core.restarts import (
    Alert,
    ForceHalt,
    HostsFailed,
    HostsLeft,
    Moved,
    Pass,
    PauseRestarts,
    Reconfigure,
    RestartConfig,
    Restarter,
    RestartInput,
    StartFinished,
    StartVM,
    Stopped,
    VMExited,
)


# ----------------------------------------------------------------- what hosts say
@dataclass(frozen=True)
class ExitRecord:
    """A VM that stopped on a host: ``kind`` is ``crash``, ``internal-shutdown``
    or ``stopped`` (by the operator), numbered by the host's ``seq``."""

    seq: int
    vm: str
    kind: str
    returncode: int | None = None


#: seconds between two passes of a settled pool at least: a pass asks every live
#: host over the network (each host answers on its management thread), and at a
#: short T a pass every heartbeat interval was a third of an idle host's CPU
SURVEY_FLOOR = 1.0


def pass_interval(t1: float) -> float:
    """Seconds between the passes of a settled pool, for heartbeat interval ``t1``:
    a VM that crashes is noticed within this, a failed host at once (its commit)."""
    return max(t1, SURVEY_FLOOR)

@dataclass(frozen=True)
class HostList:
    """A host's answer to a survey: what it runs and what exited since the cursor."""

    running: frozenset[str]
    exits: tuple[ExitRecord, ...] = ()
    last_seq: int = 0


class Outcome(Enum):
    STARTED = "started"
    FAILED = "failed"
    UNSURE = "unsure"  # the request may have arrived: ask the host, do not guess


# ----------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Surveyed:
    """One pass: the liveset (host uuids), each live host's answer, the database's view."""

    now: float
    live: frozenset[str]
    answers: Mapping[str, HostList | None]
    pool: Pool


@dataclass(frozen=True)
class StartAnswered:
    """The answer to a :class:`~hacluster.core.restarts.StartVM`, exactly one each."""

    now: float
    vm: str
    host: str
    outcome: Outcome
    error: str = ""


DutyInput = (Surveyed | StartAnswered | HostsFailed | HostsLeft | VMExited | PauseRestarts
             | Reconfigure | Moved | Stopped)


# ----------------------------------------------------------------- outputs
@dataclass(frozen=True)
class TookOver:
    live: frozenset[str]
    running: int  # VMs the hosts reported running


@dataclass(frozen=True)
class ExitSeen:
    """A host reported that a VM stopped by itself."""

    vm: str
    host: str
    kind: str
    returncode: int | None


@dataclass(frozen=True)
class Plan:
    """How many host failures the pool can take now, against the configured number."""

    max_failures: int
    exact: bool
    configured: int
    overcommitted: bool
    why: str

    def fields(self) -> dict[str, Any]:
        return {"max_failures": self.max_failures, "exact": self.exact,
                "configured": self.configured, "overcommitted": self.overcommitted,
                "why": self.why}


@dataclass(frozen=True)
class PlanChanged:
    plan: Plan


DutyAction = StartVM | ForceHalt | Alert | TookOver | ExitSeen | PlanChanged


@dataclass
class Duties:
    """The master's duties for one term of office; feed inputs with :meth:`handle`."""

    config: RestartConfig
    restarter: Restarter | None = field(init=False, default=None)
    plan: Plan | None = field(init=False, default=None)
    _cursor: dict[str, int] = field(init=False, default_factory=dict)
    _unsure: dict[str, str] = field(init=False, default_factory=dict)  # vm -> host
    _failed: set[str] = field(init=False, default_factory=set)
    _silent: set[str] = field(init=False, default_factory=set)  # did not answer the take-over
    _paused_until: float = field(init=False, default=-math.inf)
    _plan_key: object = field(init=False, default=None)
    _out: list[DutyAction] = field(init=False, default_factory=list)

    # ------------------------------------------------------------ public
    @property
    def took_over(self) -> bool:
        return self.restarter is not None

    def next_wake(self, now: float) -> float | None:
        """When a waiting restart may become possible (:meth:`Restarter.next_wake`)."""
        return self.restarter.next_wake(now) if self.restarter is not None else None

    @property
    def pool(self) -> Pool | None:
        """The master's view, once it took over."""
        return self.restarter.pool if self.restarter is not None else None

    @property
    def unsure(self) -> dict[str, str]:
        """Starts whose outcome is not known yet: vm -> host."""
        return dict(self._unsure)

    def cursor(self, host: str) -> int:
        """The last exit of ``host`` seen: a survey asks for the ones after it."""
        return self._cursor.get(host, 0)

    def handle(self, event: DutyInput) -> list[DutyAction]:
        self._out = []
        match event:
            case Surveyed():
                self._pass(event)
            case StartAnswered(now=now, vm=vm, host=host, outcome=outcome, error=error):
                if outcome is Outcome.UNSURE:
                    self._unsure[vm] = host
                else:
                    self._feed(StartFinished(now, vm, host, outcome is Outcome.STARTED, error))
            case HostsFailed(hosts=hosts):
                self._failed |= hosts  # fed at the next pass, after what the hosts say
            case PauseRestarts(until=until):
                self._paused_until = until
                self._feed(event)
            case HostsLeft() | VMExited() | Reconfigure() | Moved() | Stopped():
                self._feed(event)
        return self._out

    # ------------------------------------------------------------ passes
    def _pass(self, event: Surveyed) -> None:
        now, live = event.now, event.live
        if self.restarter is None:
            self._take_over(event)
        else:
            self._observe(now, event.answers)
        if self._failed:
            hosts, self._failed = frozenset(self._failed), set()
            self._feed(HostsFailed(now, hosts))
        for vm, host in sorted(self._unsure.items()):
            if host not in live:
                del self._unsure[vm]
                self._feed(StartFinished(now, vm, host, False, "host left the liveset"))
        self._feed(Pass(now, live))
        self._publish_plan(live)

    def _take_over(self, event: Surveyed) -> None:
        now, live, answers = event.now, event.live, event.answers
        pool = event.pool
        observed = {vm: host for host, answer in sorted(answers.items()) if answer
                    for vm in sorted(answer.running)}
        crashed = [vm for vm in pool.vms
                   if vm.uuid not in observed and vm.resident in live and answers.get(vm.resident)]
        pool = pool.with_vms(replace(vm, power=Power.RUNNING, resident=observed[vm.uuid])
                             for vm in pool.vms if vm.uuid in observed)
        for host, answer in answers.items():
            if answer:
                self._cursor[host] = answer.last_seq
        self._silent = {host for host in live if answers.get(host) is None}
        self.restarter = Restarter(pool, self.config)
        self._out.append(TookOver(live, len(observed)))
        if self._paused_until > now:
            self._feed(PauseRestarts(now, self._paused_until))
        self._failed |= {vm.resident for vm in pool.vms
                         if vm.resident is not None and vm.resident not in live}
        for vm in crashed:
            assert vm.resident is not None
            self._feed(VMExited(now, vm.uuid, vm.resident, internal_shutdown=False))

    def _observe(self, now: float, answers: Mapping[str, HostList | None]) -> None:
        for host, answer in sorted(answers.items()):
            if answer is None:
                continue
            if host in self._silent:
                self._adopt(now, host, answer)
                continue
            if answer.last_seq < self.cursor(host):
                self._cursor[host] = 0  # a new agent (the host restarted): ask from its first
            for vm, where in sorted(self._unsure.items()):
                if where == host:
                    del self._unsure[vm]
                    ok = vm in answer.running
                    self._feed(StartFinished(now, vm, host, ok,
                                             "" if ok else "start outcome lost; not running"))
            for record in answer.exits:
                self._cursor[host] = max(self.cursor(host), record.seq)
                if record.kind == "stopped":
                    continue
                self._out.append(ExitSeen(record.vm, host, record.kind, record.returncode))
                self._feed(VMExited(now, record.vm, host, record.kind == "internal-shutdown"))

    def _adopt(self, now: float, host: str, answer: HostList) -> None:
        """A host silent at the take-over answers at last: taken over by the same
        rule. What it runs runs there; a VM the view still places on it that it
        does not run (and is not being started there) has crashed; its earlier
        exits are history."""
        assert self.restarter is not None
        self._silent.discard(host)
        self._cursor[host] = answer.last_seq
        starting = self.restarter.starting
        for vm in self.restarter.pool.vms:
            if vm.uuid in answer.running and not vm.running and vm.uuid not in starting:
                self._feed(Moved(now, vm.uuid, host))
            elif vm.resident == host and vm.uuid not in answer.running and (
                    starting.get(vm.uuid) != host and self._unsure.get(vm.uuid) != host):
                self._feed(VMExited(now, vm.uuid, host, internal_shutdown=False))

    def _feed(self, event: RestartInput) -> None:
        if self.restarter is not None:
            self._out.extend(self.restarter.handle(event))

    # ------------------------------------------------------------ plan
    def _publish_plan(self, live: frozenset[str]) -> None:
        assert self.restarter is not None
        pool = self.restarter.pool
        key = (live, pool)  # the whole view: configuration changes count too
        if key == self._plan_key:
            return
        self._plan_key = key
        tol, configured = tolerance(pool, live), pool.host_failures_to_tolerate
        plan = Plan(tol.max_failures, tol.exact, configured, overcommitted(tol, configured),
                    tol.why)
        if plan == self.plan:
            return
        self._out.append(PlanChanged(plan))
        if plan.overcommitted and not (self.plan is not None and self.plan.overcommitted):
            self._out.append(Alert("ha_pool_overcommitted", "pool",
                                   f"no plan for {configured} host failure(s): {tol.why}"))
        self.plan = plan
