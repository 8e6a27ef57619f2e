"""The master's duties in the simulation: the core's :class:`Duties`, bound to sim hosts.

Rules:

* Whoever the cores say holds the master lock runs the pure duties
  (:mod:`hacluster.core.duties`), the same code the daemon runs. A host that
  gains the lock (or a new boot of it) starts a fresh term of office: its
  first pass takes the pool over from the shared pool database.
* A pass runs every ``t1`` of the master's steps, and at once after a
  liveset commit, a gained lock or a start's answer. It surveys every host of
  the master's liveset: a host whose daemon is up answers at once with the
  VMs it runs and the exits it recorded since the master's cursor (numbered
  per boot, as the daemon's VM driver numbers them); a paused or dead host,
  or one the network cuts off from the master, does not answer.
* The "sim" VM driver only counts memory: a start succeeds after
  ``boot_time`` on an armed, unpaused host with the memory free, and fails
  (at once, or when the host dies while booting) otherwise. A start sent to a
  paused host times out (``UNSURE``) and waits in its socket: the host
  serves it when it resumes, if it is still armed and has the memory. A start
  to a host cut off from the master is ``UNSURE`` and never arrives. A VM
  counts as running on its host from the moment its boot begins.
* The pool database is the master's view after every step of the duties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from hacluster.core.duties import (
    Duties,
    DutyInput,
    ExitSeen,
    Outcome,
    Plan,
    StartAnswered,
    Surveyed,
    TookOver,
)
from hacluster.core.effects import carry_out_duties, duty_inputs
from hacluster.core.events import LivesetCommitted
from hacluster.core.pool import Pool
from hacluster.core.restarts import (
    Alert,
    HostsFailed,
    HostsLeft,
    PauseRestarts,
    RestartConfig,
    StartVM,
)
from hacluster.sim.checker import Checker
from hacluster.sim.clock import EventQueue
from hacluster.sim.hosts import SimHost, VMEvent
from hacluster.sim.trace import Trace

MakeDutyInput = Callable[[float], DutyInput]


class SimMaster:
    """The master's term of office in the simulation, and the sim VM driver."""

    def __init__(self, queue: EventQueue, hosts: list[SimHost], pool: Pool,
                 restart: RestartConfig, interval: float, boot_time: float,
                 checker: Checker, trace: Trace,
                 reachable: Callable[[int, int], bool] = lambda a, b: True) -> None:
        self.queue = queue
        self.reachable = reachable
        self.hosts = hosts
        self.pool_db = pool  # the shared pool database
        self.restart = restart
        self.interval = interval
        self.boot_time = boot_time
        self.checker = checker
        self.trace = trace
        self.vm_log: list[VMEvent] = []
        self.alerts: list[tuple[float, int, Alert]] = []  # (time, raised by, alert)
        self.duties: Duties | None = None
        self.holder: SimHost | None = None
        self._holder_boot = 0
        self._inbox: list[MakeDutyInput] = []
        self._busy = False
        self._next_pass = 0.0
        self.pass_due = True
        self.paused_until = float("-inf")  # restarts paused (true time)
        self._index = {h.uuid: i for i, h in enumerate(pool.hosts)}
        self._memory = {vm.uuid: vm.memory for vm in pool.vms}

    def uuids(self, indices: frozenset[int]) -> frozenset[str]:
        return frozenset(self.pool_db.hosts[i].uuid for i in indices)

    def log(self, host: int | None, kind: str, text: str) -> None:
        self.trace.record(self.queue.t, host, kind, text)

    # ------------------------------------------------------------ driving
    def step(self, master: SimHost) -> None:
        """Run the duties on ``master``, which holds the lock and is awake:
        its pending inputs, then a pass when one is due."""
        if self._busy:
            return
        self._busy = True
        try:
            if self.holder is not master or self._holder_boot != master.boot:
                self._take_office(master)
            clock = master.clock
            while self._inbox:
                self._handle(self._inbox.pop(0)(clock.local(self.queue.t)))
            if self.pass_due or self.queue.t >= self._next_pass:
                self.pass_due = False
                self._next_pass = self.queue.t + self.interval
                self._handle(self._survey(master))
        finally:
            self._busy = False

    def _take_office(self, master: SimHost) -> None:
        self.duties = Duties(self.restart)
        self.holder, self._holder_boot = master, master.boot
        self._inbox.clear()
        self.pass_due = True
        if self.paused_until > self.queue.t:
            until = master.clock.local(self.paused_until)
            self._inbox.append(lambda now: PauseRestarts(now, until))

    def _survey(self, master: SimHost) -> Surveyed:
        core = master.core
        assert core is not None and core.liveset is not None and self.duties is not None
        t = self.queue.t
        answers = {}
        for i in sorted(core.liveset):
            uuid = self.pool_db.hosts[i].uuid
            answers[uuid] = (self.hosts[i].answer_survey(self.duties.cursor(uuid), t)
                             if self.reachable(master.index, i) else None)
        return Surveyed(master.clock.local(t), self.uuids(core.liveset), answers, self.pool_db)

    def _handle(self, event: DutyInput) -> None:
        assert self.duties is not None
        actions = self.duties.handle(event)
        if self.duties.pool is not None:
            self.pool_db = self.duties.pool
        carry_out_duties(actions, _Effects(self))

    def resign(self, host: SimHost) -> None:
        """``host`` lost the lock, fenced or died: its term of office ends."""
        if self.holder is host:
            self.duties, self.holder = None, None
            self._inbox.clear()

    def tell(self, make: MakeDutyInput) -> None:
        """Queue an input for the master's duties; run it now if the master is awake."""
        master = self.holder
        if master is None:
            return
        self._inbox.append(make)
        core = master.core
        if core is not None and core.is_master and master.paused_until <= self.queue.t:
            self.step(master)

    def committed(self, host: SimHost, commit: LivesetCommitted) -> None:
        """``host`` committed a liveset: a pass is due; if it is the master, its
        duties learn which hosts failed or left."""
        self.pass_due = True
        if self.holder is host:
            now = host.clock.local(self.queue.t)
            for event in duty_inputs(now, commit, [h.uuid for h in self.pool_db.hosts]):
                self.tell(partial(_at_commit, event))

    def pause_restarts(self, seconds: float) -> None:
        self.paused_until = self.queue.t + seconds
        master = self.holder
        if master is not None:
            until = master.clock.local(self.paused_until)
            self.tell(lambda now: PauseRestarts(now, until))

    # ------------------------------------------------------------ the sim VM driver
    def free_memory(self, index: int) -> int:
        """What the sim VM driver has left on host ``index``."""
        host = self.pool_db.hosts[index]
        used = sum(self._memory[vm] for vm in self.hosts[index].vms)
        return host.memory_total - host.memory_overhead - used

    def start_vm(self, vm: str, host_uuid: str) -> None:
        master = self.holder
        assert master is not None
        index = self._index[host_uuid]
        target = self.hosts[index]
        t = self.queue.t
        self.log(master.index, "VM", f"{vm} starting on host {index}")
        self.vm_log.append(VMEvent(t, vm, index, "starting", master.index))
        duties = self.duties

        def answer(outcome: Outcome, error: str = "") -> None:
            what = {Outcome.STARTED: "running", Outcome.FAILED: "failed",
                    Outcome.UNSURE: "unsure"}[outcome]
            self.log(index, "VM", f"{vm} {what} on host {index}" + (f": {error}" if error else ""))
            self.vm_log.append(VMEvent(self.queue.t, vm, index, what))
            if self.duties is duties:
                self.tell(lambda now: StartAnswered(now, vm, host_uuid, outcome, error))
                self.pass_due = True

        if not self.reachable(master.index, index):
            answer(Outcome.UNSURE, "host unreachable")
        elif target.core is None or not target.core.armed:
            answer(Outcome.FAILED, "host not armed")
        elif target.paused_until > t:
            answer(Outcome.UNSURE, "host not responding")
            target.requests.append(partial(self._late_start, target, target.boot, vm))
        elif self.free_memory(index) < self._memory[vm]:
            answer(Outcome.FAILED, f"not enough memory ({self.free_memory(index)} MiB free)")
        else:
            target.vms.add(vm)
            self.checker.vm_started(t, vm, index)
            boot = target.boot

            def booted() -> None:
                if target.boot == boot and vm in target.vms:
                    answer(Outcome.STARTED)
                else:
                    answer(Outcome.FAILED, "stopped while booting")

            self.queue.at(t + self.boot_time, booted)

    def _late_start(self, target: SimHost, boot: int, vm: str) -> None:
        """A start that waited in a paused host's socket, served as it resumes."""
        if target.boot != boot or target.core is None or not target.core.armed or (
                vm in target.vms or self.free_memory(target.index) < self._memory[vm]):
            return
        target.vms.add(vm)
        self.checker.vm_started(self.queue.t, vm, target.index)
        self.log(target.index, "VM", f"{vm} running on host {target.index}: its start "
                 "waited in the socket while the daemon was paused")
        self.vm_log.append(VMEvent(self.queue.t, vm, target.index, "running"))


@dataclass
class _Effects:
    """The duty effects of the simulated master."""

    master: SimMaster

    @property
    def by(self) -> int:
        assert self.master.holder is not None
        return self.master.holder.index

    def start_vm(self, start: StartVM) -> None:
        self.master.start_vm(start.vm, start.host)

    def force_halted(self, vm: str, host: str) -> None:
        index = self.master._index[host]
        self.master.log(self.by, "VM", f"{vm} of host {index} forced halted")
        self.master.vm_log.append(VMEvent(self.master.queue.t, vm, index, "halted", self.by))

    def alert(self, alert: Alert) -> None:
        self.master.alerts.append((self.master.queue.t, self.by, alert))
        self.master.log(self.by, "ALERT", f"{alert.name} {alert.obj}: {alert.body}")

    def took_over(self, event: TookOver) -> None:
        self.master.log(self.by, "RESTART", "restart executor taken over from the pool database")

    def exit_seen(self, event: ExitSeen) -> None:
        self.master.log(self.by, "RESTART", f"host {self.master._index[event.host]} reports "
                        f"{event.vm} exited ({event.kind})")

    def plan_changed(self, plan: Plan) -> None:
        self.master.log(self.by, "PLAN", f"tolerates {plan.max_failures} host failure(s) of "
                        f"{plan.configured} configured" + (" (overcommitted)"
                                                           if plan.overcommitted else ""))


def _at_commit(event: HostsFailed | HostsLeft, now: float) -> DutyInput:
    """A commit's input, stamped when the commit happened (the master was awake)."""
    return event
