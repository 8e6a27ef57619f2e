"""The master's restart executor: from host failures and VM exits to VM starts.

Rules (spec section 9):

* Pure: every input carries ``now`` (the master's monotonic clock, seconds) and
  every output is plain data. The executor holds the master's view of the pool
  and updates it itself; the adapter answers every :class:`StartVM` with
  exactly one :class:`StartFinished`.
* :class:`HostsFailed` (the committed liveset removed these hosts, so they have
  fenced): each is marked not live, ``ha_host_failed`` is raised and its VMs
  are forced halted (:class:`ForceHalt`). :class:`Pass` sets the live hosts to
  the committed liveset.
* :class:`HostsLeft` (a clean shutdown) marks the hosts not live and their
  VMs halted, with no alert and no force-halt.
* Who is restarted:

  - protected (``restart``) VMs are level-sensitive: any found halted is
    started on every input (every :class:`Pass` in particular) until it runs;
  - best-effort VMs only when they were running on a failed host or crashed,
    at most ``pool.best_effort_attempts`` tries (a failed start, or no room; tries
    at least ``retry_interval`` apart), counted afresh when the liveset grows,
    and only once no protected VM is waiting to start or in an order delay;
  - unprotected VMs never;
  - a VM shut down from inside its guest stays halted, unless it is protected
    and ``pool.reboot_vm_on_internal_shutdown``;
  - a suspended VM never (the operator resumes it), nor a VM the operator
    stopped (:class:`Stopped`) until it is started again.

* Beyond tolerance: while more hosts are down than
  ``pool.host_failures_to_tolerate``, protected VMs get the best-effort bound
  (still before best-effort VMs and in order), and
  ``ha_failures_exceed_tolerance`` is raised once per such episode.
* Order: protected VMs start in groups of ascending ``order``, each group in
  parallel. A group waits while a start of a lower group is unfinished, and
  until the largest ``start_delay`` of the VMs of that lower group that
  started has passed since its last start finished.
* A VM with passthrough/GPU device classes (best-effort at most) goes to the
  live host offering them that fits it most tightly, never to another.
* Placement: each group's agile VMs are planned with :func:`planner.place`
  (best-fit decreasing, ties by uuid) on the memory the live enabled hosts
  have left after running VMs, starts in flight and lower groups. A VM goes to
  its planned host unless that host failed to start it within
  ``retry_interval`` (the per-VM rate limit); otherwise to the other host
  that fits it most tightly. A non-agile VM may only go back to the host it
  last ran on; with that host down it stays halted.
* A protected VM that cannot be placed raises
  ``ha_protected_vm_restart_failed`` once per episode (until it runs again);
  it is retried on every input, so it starts when capacity returns.
* A :class:`VMExited` of a VM the pool does not know (a host may run others),
  or from a host the view does not place it on, is stale and ignored.
* While restarts are paused (:class:`PauseRestarts`) nothing is started.
* :class:`Reconfigure` takes the pool database's new configuration (VMs
  installed arrive halted, uninstalled ones leave); a start in flight
  finishes in the order group it was started in. :class:`Moved` records where
  an operator's start or move put a VM, :class:`Stopped` that the operator
  halted or suspended it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import assert_never

from hacluster.core.planner import Item, Problem, place
from hacluster.core.pool import VM, Pool, PoolError, Power, Priority, agility
from hacluster.core.restart_events import (
    Alert,
    ForceHalt,
    HostsFailed,
    HostsLeft,
    Moved,
    Pass,
    PauseRestarts,
    Reconfigure,
    RestartAction,
    RestartInput,
    StartFinished,
    StartVM,
    Stopped,
    VMExited,
)

__all__ = [
    "Alert",
    "ForceHalt",
    "HostsFailed",
    "HostsLeft",
    "Moved",
    "Pass",
    "PauseRestarts",
    "Reconfigure",
    "RestartAction",
    "RestartConfig",
    "RestartInput",
    "Restarter",
    "StartFinished",
    "StartVM",
    "Stopped",
    "VMExited",
]


@dataclass(frozen=True)
class RestartConfig:
    retry_interval: float = 10.0  # a host that failed to start a VM is not retried sooner

    def __post_init__(self) -> None:
        if self.retry_interval <= 0:
            raise ValueError(f"retry_interval must be positive, got {self.retry_interval}")


@dataclass
class _VMRestart:
    """What the executor knows of one VM beyond the pool view."""

    starting_on: str | None = None  # the host it is being started on
    barred: dict[str, float] = field(default_factory=dict)  # host -> not retried before
    tries: int = 0  # bounded VMs: tries spent
    next_try: float = -math.inf  # bounded VMs: not tried again before
    wanted: bool = False  # best-effort: to bring back
    held: bool = False  # protected, shut down by its guest: stays halted
    last_host: str | None = None
    alerted: bool = False  # its restart failure was raised

    def forget_tries(self) -> None:
        self.tries, self.next_try = 0, -math.inf

    def started(self) -> None:
        """It runs (started, or moved by the operator): no retry bookkeeping left."""
        self.barred.clear()
        self.forget_tries()
        self.wanted = False


@dataclass
class _Batch:
    """The starts in flight of one order group."""

    pending: set[str] = field(default_factory=set)
    delay: float = 0.0  # largest start_delay of its VMs that started


class Restarter:
    """The restart executor of the master; feed it inputs with :meth:`handle`."""

    def __init__(self, pool: Pool, config: RestartConfig | None = None,
                 live: Iterable[str] | None = None) -> None:
        self.config = config if config is not None else RestartConfig()
        self._pool = pool
        everyone = frozenset(h.uuid for h in pool.hosts)
        self._live = everyone if live is None else frozenset(live) & everyone
        self._vms: dict[str, _VMRestart] = {}
        self._batches: dict[int, _Batch] = {}  # order -> its starts in flight
        self._gates: list[tuple[int, float]] = []  # (order, until): later orders wait
        self._beyond_tolerance = False
        self._paused_until = -math.inf

    # ------------------------------------------------------------ public
    @property
    def pool(self) -> Pool:
        return self._pool

    @property
    def live(self) -> frozenset[str]:
        return self._live

    def next_wake(self, now: float) -> float | None:
        """The earliest moment after ``now`` a waiting start may become possible (an
        order delay, a pause or a retry interval ending), for the adapter to pass
        then rather than at its next interval; None if nothing waits on time."""
        times = [until for _, until in self._gates if until > now]
        times += [r.next_try for r in self._vms.values() if r.next_try > now]
        times += [t for r in self._vms.values() for t in r.barred.values() if t > now]
        if self._paused_until > now:
            times.append(self._paused_until)
        return min(times, default=None)

    @property
    def starting(self) -> dict[str, str]:
        """VMs being started, each with its host."""
        return {vm: r.starting_on for vm, r in self._vms.items() if r.starting_on is not None}

    def _of(self, vm: str) -> _VMRestart:
        return self._vms.setdefault(vm, _VMRestart())

    def handle(self, event: RestartInput) -> list[RestartAction]:
        """Consume one input; return what the adapter must do and raise."""
        out: list[RestartAction] = []
        match event:
            case Pass():
                self._on_pass(event)
            case HostsFailed():
                self._on_hosts_failed(event, out)
            case HostsLeft(hosts=hosts):
                for host_uuid in hosts:
                    self._live = self._live - {host_uuid}
                    self._set_halted(self._pool.resident_on(host_uuid))
            case StartFinished():
                self._on_start_finished(event, out)
            case VMExited():
                self._on_vm_exited(event)
            case PauseRestarts(until=until):
                self._paused_until = until
            case Reconfigure(pool=pool):
                self._reconfigure(pool)
            case Moved():
                self._moved(event)
            case Stopped():
                self._stopped(event)
            case _:
                assert_never(event)
        self._check_tolerance(out)
        self._restart(event.now, out)
        return out

    # ------------------------------------------------------------ inputs
    def _on_pass(self, event: Pass) -> None:
        live = event.live & frozenset(h.uuid for h in self._pool.hosts)
        if live - self._live:  # the liveset grew: bounded VMs get their tries back
            for state in self._vms.values():
                state.forget_tries()
        self._live = live

    def _reconfigure(self, config: Pool) -> None:
        known = {vm.uuid: vm for vm in self._pool.vms}
        self._pool = config.with_vms(
            replace(vm, power=known[vm.uuid].power, resident=known[vm.uuid].resident)
            for vm in config.vms if vm.uuid in known)

    def _moved(self, event: Moved) -> None:
        vm = self._pool.vm(event.vm)
        self._pool = self._pool.with_vm(replace(vm, power=Power.RUNNING, resident=event.host))
        state = self._of(event.vm)
        state.last_host = event.host
        state.started()

    def _stopped(self, event: Stopped) -> None:
        try:
            vm = self._pool.vm(event.vm)
        except PoolError:
            return  # no longer in the pool (uninstalled meanwhile)
        if event.power is Power.RUNNING:
            return  # not a stop
        self._of(vm.uuid).wanted = False
        self._pool = self._pool.with_vm(replace(vm, power=event.power, resident=None))

    def _on_hosts_failed(self, event: HostsFailed, out: list[RestartAction]) -> None:
        for host_uuid in sorted(event.hosts):
            try:
                host = self._pool.host(host_uuid)
            except PoolError:
                continue
            victims = self._pool.resident_on(host_uuid)
            if host_uuid not in self._live and not victims:
                continue  # already handled
            self._live = self._live - {host_uuid}
            out.append(Alert("ha_host_failed", host_uuid,
                             f"host {host.name} failed and has fenced; "
                             f"{len(victims)} VM(s) forced halted"))
            out.extend(ForceHalt(vm.uuid, host_uuid) for vm in victims)
            for vm in victims:
                self._lost(vm, host_uuid)
            self._set_halted(victims)

    def _on_start_finished(self, event: StartFinished, out: list[RestartAction]) -> None:
        state = self._of(event.vm)
        if state.starting_on != event.host:
            return  # not a start of ours
        state.starting_on = None
        vm = self._pool.vm(event.vm)
        ok = event.ok and event.host in self._live
        # the group it was started in (its order may have been changed since)
        order = next((o for o, b in self._batches.items() if event.vm in b.pending), None)
        if order is not None:
            batch = self._batches[order]
            batch.pending.discard(event.vm)
            if ok:
                batch.delay = max(batch.delay, vm.start_delay)
            if not batch.pending:
                del self._batches[order]
                self._gates.append((order, event.now + batch.delay))
        if ok:
            self._pool = self._pool.with_vm(replace(vm, power=Power.RUNNING,
                                                    resident=event.host))
            state.started()
            state.alerted = False
            return
        retry = event.now + self.config.retry_interval
        state.barred[event.host] = retry
        if self._bounded(vm):
            state.next_try = retry
            if state.tries >= self._pool.best_effort_attempts:
                self._give_up(vm, out)

    def _on_vm_exited(self, event: VMExited) -> None:
        try:
            vm = self._pool.vm(event.vm)
        except PoolError:
            return  # not a VM of the pool: a host may run others
        if vm.resident != event.host:
            return  # not where we think it runs: stale
        if event.internal_shutdown:
            state = self._of(vm.uuid)
            if vm.priority.protected and not self._pool.reboot_vm_on_internal_shutdown:
                state.held = True
            state.wanted = False
            state.last_host = event.host
        else:
            self._lost(vm, event.host)
        self._set_halted([vm])

    # ------------------------------------------------------------ state
    def _lost(self, vm: VM, host: str) -> None:
        """``vm`` died with its host or crashed: a new restart episode begins."""
        state = self._of(vm.uuid)
        state.last_host = host
        if vm.priority is Priority.BEST_EFFORT:
            state.wanted = True
            state.forget_tries()

    def _set_halted(self, vms: Iterable[VM]) -> None:
        self._pool = self._pool.with_vms(replace(vm, power=Power.HALTED, resident=None)
                                         for vm in vms)

    def _check_tolerance(self, out: list[RestartAction]) -> None:
        down = len(self._pool.hosts) - len(self._live)
        beyond = down > self._pool.host_failures_to_tolerate
        if beyond and not self._beyond_tolerance:
            out.append(Alert("ha_failures_exceed_tolerance", "pool",
                             f"{down} host(s) down, more than the "
                             f"{self._pool.host_failures_to_tolerate} tolerated: protected VMs "
                             f"are restarted as best-effort ({self._pool.best_effort_attempts} "
                             "tries)"))
        self._beyond_tolerance = beyond

    def _bounded(self, vm: VM) -> bool:
        """Has ``vm`` a bounded number of tries (best-effort, or protected beyond tolerance)?"""
        return not vm.priority.protected or self._beyond_tolerance

    def _due(self, vm: VM, now: float) -> bool:
        """Should ``vm`` be started now, if there is room?"""
        state = self._vms.get(vm.uuid, _IDLE)
        if vm.power is not Power.HALTED or state.starting_on is not None:
            return False
        if vm.priority.protected:
            if state.held:
                return False
        elif vm.priority is not Priority.BEST_EFFORT or not state.wanted:
            return False
        if not self._bounded(vm):
            return True
        return state.tries < self._pool.best_effort_attempts and state.next_try <= now

    def _give_up(self, vm: VM, out: list[RestartAction]) -> None:
        out.append(Alert("ha_vm_restart_abandoned", vm.uuid,
                         f"VM {vm.name} ({vm.priority.label}) did not start after "
                         f"{self._pool.best_effort_attempts} tries; tried again when a "
                         "host joins"))

    # ------------------------------------------------------------ restarts
    def _gate_open(self, order: float, now: float) -> bool:
        """May VMs of ``order`` start: no lower group in flight or in its start delay?"""
        if any(o < order for o in self._batches):
            return False
        return all(until <= now for o, until in self._gates if o < order)

    def _restart(self, now: float, out: list[RestartAction]) -> None:
        if now < self._paused_until:
            return
        self._gates = [(o, until) for o, until in self._gates if until > now]
        due = [vm for vm in self._pool.vms if self._due(vm, now)]
        if not due:
            return
        room = dict(Problem.from_pool(self._pool, self._live).bins_for(()))
        starting = self.starting
        for vm_uuid, host in starting.items():
            if host in room:
                room[host] -= self._pool.vm(vm_uuid).memory
        protected = [vm for vm in due if vm.priority.protected]
        waiting = any(self._pool.vm(v).priority.protected for v in starting)
        for order in sorted({vm.order for vm in protected}):
            if not self._gate_open(order, now):
                waiting = True
                break
            group = [vm for vm in protected if vm.order == order]
            started, stuck = self._start_group(group, room, now, out)
            waiting = waiting or stuck
            if started:
                batch = self._batches.setdefault(order, _Batch())
                batch.pending.update(started)
                waiting = True
                break
        if waiting or not self._gate_open(math.inf, now):
            return
        best_effort = [vm for vm in due if not vm.priority.protected]
        self._start_group(best_effort, room, now, out)

    def _start_group(self, group: list[VM], room: dict[str, int], now: float,
                     out: list[RestartAction]) -> tuple[list[str], bool]:
        """Start what fits of ``group``; return the VMs started and whether any waits on a retry."""
        targets: dict[str, str | None] = {}
        why: dict[str, str] = {}
        agile: list[VM] = []
        for vm in group:
            if reasons := agility(self._pool, vm):
                home = self._of(vm.uuid).last_host
                targets[vm.uuid] = self._take(vm, [home] if home else [], room, now)
                why[vm.uuid] = f"its last host: not agile ({reasons[0].what})"
            elif vm.devices:  # best-effort at most: outside the plan
                fits = sorted((room[h] - vm.memory, h) for h in room
                              if self._pool.can_host(vm, h))
                targets[vm.uuid] = self._take(vm, [h for _, h in fits], room, now)
                why[vm.uuid] = (f"the tightest fit among the hosts with its device class(es) "
                                f"{', '.join(vm.devices)}")
            else:
                agile.append(vm)
        free = dict(room)
        plan, _ = place([Item(vm.uuid, vm.memory) for vm in agile], sorted(room.items()))
        rest: list[VM] = []
        for vm in agile:
            planned = plan.get(vm.uuid)
            if planned is not None and self._take(vm, [planned], room, now):
                targets[vm.uuid] = planned
                why[vm.uuid] = (f"the restart plan: best fit, largest VM first ({vm.memory} MiB "
                                f"into {free[planned]} MiB free there)")
            else:
                rest.append(vm)
        for vm in rest:  # fall back: the host that fits it most tightly
            fits = sorted((room[h] - vm.memory, h) for h in room)
            targets[vm.uuid] = self._take(vm, [h for _, h in fits], room, now)
            why[vm.uuid] = "outside the plan: the host it fits most tightly"
        started: list[str] = []
        stuck = False
        for vm in group:
            host = targets[vm.uuid]
            if host is not None:
                state = self._of(vm.uuid)
                out.append(StartVM(vm.uuid, host, why[vm.uuid], state.last_host or ""))
                state.starting_on = host
                started.append(vm.uuid)
                if self._bounded(vm):
                    state.tries += 1
            elif self._waits_for_retry(vm, room, now):
                stuck = True
            else:
                self._no_room(vm, now, out)
        return started, stuck

    def _take(self, vm: VM, choices: list[str], room: dict[str, int],
              now: float) -> str | None:
        """The first of ``choices`` that is live, has room and did not just fail ``vm``."""
        barred = self._of(vm.uuid).barred
        for host in choices:
            if room.get(host, -1) >= vm.memory and barred.get(host, -math.inf) <= now:
                room[host] -= vm.memory
                return host
        return None

    def _waits_for_retry(self, vm: VM, room: dict[str, int], now: float) -> bool:
        """Would ``vm`` fit on a host that failed it recently (so it waits, not alerts)?"""
        barred = self._of(vm.uuid).barred
        return any(until > now and room.get(host, -1) >= vm.memory
                   for host, until in barred.items())

    def _no_room(self, vm: VM, now: float, out: list[RestartAction]) -> None:
        reasons = agility(self._pool, vm)
        if reasons:
            home = self._of(vm.uuid).last_host
            where = (f"its host {self._pool.host(home).name} is down or full" if home
                     else "it has no known host")
            why = (f"it is not agile ({'; '.join(map(str, reasons))}) and {where}")
        else:
            why = f"no live host has {vm.memory} MiB free"
        state = self._of(vm.uuid)
        if self._bounded(vm):
            state.tries += 1
            state.next_try = now + self.config.retry_interval
            if state.tries >= self._pool.best_effort_attempts:
                self._give_up(vm, out)
        if vm.priority.protected and not state.alerted:
            state.alerted = True
            out.append(Alert("ha_protected_vm_restart_failed", vm.uuid,
                             f"protected VM {vm.name} cannot be restarted: {why}; "
                             "retried when capacity returns"))


_IDLE = _VMRestart()  # what the executor knows of a VM it never handled (never mutated)
