"""A seeded discrete-event simulation of a pool of hosts running the real core.

Rules:

* Time is the simulator's true time; each host sees its own monotonic clock,
  ``offset + rate * t``, with a rate drawn within the configured skew.
* Every random choice comes from one ``random.Random(seed)``: a run is a pure
  function of its configuration and seed.
* A paused host's daemon receives nothing until it resumes (inputs queue, as in
  a socket buffer); its VMs, its in-flight I/O and its watchdogs keep running.
* A watchdog fires when its host's daemon has not petted it within the
  timeout, paused or not; firing kills the daemon and the host's VMs.
* A crash kills daemon and VMs with no last words; a fence decided by the core
  kills the VMs first, then writes a "fenced" report to the slot and network.
* The pool (``SimConfig.pool``, host ``i`` = ``pool.hosts[i]``) starts with
  its running VMs on their hosts (none on a cold start, when the hosts boot from
  power-off); by default every host has room for every VM and runs
  ``vms_per_host`` protected order-0 VMs.
* Each host's core outputs are carried out by the one interpreter
  (:func:`hacluster.core.effects.carry_out`) bound to the fake network,
  volume, watchdogs and clock here; the master runs the core's duties
  (:mod:`hacluster.sim.master`), the same code as the daemon's master.
* A VM may stop by itself (:meth:`Simulation.vm_exit`): a crash, or a shutdown
  from inside its guest; its host's agent reports it to the master's next pass.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial

from hacluster.core.duties import pass_interval
from hacluster.core.effects import carry_out
from hacluster.core.events import (
    HeartbeatReceived,
    LivesetCommitted,
    PhaseChanged,
    ReadSlots,
    SlotsRead,
    SlotWritten,
    Tick,
    Wait,
    Watchdog,
    WriteSlot,
)
from hacluster.core.messages import HostSet, Phase, Report
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.pool import Pool, Power
from hacluster.core.restarts import Alert
from hacluster.sim.checker import Checker, order_group_delays, restart_bound, settle_bound
from hacluster.sim.clock import EventQueue, HostClock
from hacluster.sim.config import VM_MEMORY, SimConfig, default_pool
from hacluster.sim.faults import FaultInjection
from hacluster.sim.hosts import MakeInput, SimHost, VMEvent
from hacluster.sim.master import SimMaster
from hacluster.sim.network import SimNetwork
from hacluster.sim.storage import SimStorage
from hacluster.sim.trace import Trace

__all__ = ["VM_MEMORY", "SimConfig", "SimHost", "Simulation", "VMEvent", "default_pool"]

class Simulation(FaultInjection):
    def __init__(self, config: SimConfig, trace: Trace | None = None) -> None:
        self.config = config
        self.timing = config.resolved_timing()
        self.rng = random.Random(config.seed)
        self.trace = trace if trace is not None else Trace(keep=400)
        self.checker = Checker(self.trace)
        self.commits: list[tuple[float, int, LivesetCommitted]] = []  # (time, host, commit)
        everyone = frozenset(range(config.hosts))
        self.members = config.members if config.members is not None else everyone
        self.members_version = 0
        self.core_config = CoreConfig(
            self.timing, config.hosts, generation=self.rng.getrandbits(63), mode=config.mode,
            members=self.members,
        )
        self.network = SimNetwork(self.rng, config.network)
        self.storage = SimStorage(config.hosts)
        self.clock = EventQueue()
        self.hosts = [
            SimHost(i, HostClock(rate=1 + self.rng.uniform(-config.skew, config.skew),
                                 offset=self.rng.uniform(100, 10_000)))
            for i in range(config.hosts)
        ]
        pool = config.resolved_pool()  # the shared pool database
        vacant = {h.uuid for i, h in enumerate(pool.hosts) if i not in self.members}
        if config.cold_start:  # the hosts boot from power-off: nothing runs yet
            pool = pool.with_vms(
                replace(vm, power=Power.HALTED, resident=None) for vm in pool.vms)
        elif vacant:  # VMs placed on a host that is not a member yet run nowhere
            pool = pool.with_vms(
                replace(vm, power=Power.HALTED, resident=None) if vm.resident in vacant
                else vm for vm in pool.vms)
        self.vms = [vm.uuid for vm in pool.vms]
        self._index = {h.uuid: i for i, h in enumerate(pool.hosts)}
        self.master = SimMaster(self.clock, self.hosts, pool, config.resolved_restart(),
                                pass_interval(self.timing.t1), config.boot_time,
                                self.checker, self.trace, self.network.reachable)
        for vm in pool.vms:
            if vm.resident is not None:
                self.hosts[self._index[vm.resident]].vms.add(vm.uuid)
                self.checker.vm_started(0.0, vm.uuid, self._index[vm.resident])
        self._effects = [_HostEffects(self, host) for host in self.hosts]
        for host in self.hosts:
            host.boot = 1
            if host.index not in self.members:
                host.state = "vacant"
                continue
            host.core = HostCore(self.core_config, host.index, host.boot, self.local(host),
                                 liveset=None if config.cold_start else self.members)
            self._deliver(host, Tick)

    # ------------------------------------------------------------ time
    @property
    def t(self) -> float:
        return self.clock.t

    def local(self, host: SimHost, t: float | None = None) -> float:
        return host.clock.local(self.t if t is None else t)

    def at(self, t: float, action: Callable[[], None]) -> None:
        self.clock.at(t, action)

    def when(self, condition: Callable[[], bool], action: Callable[[], None]) -> None:
        """Run ``action`` at the first moment ``condition()`` holds, checked from
        now on every hundredth of T (a fault timed by the pool's state)."""
        def check() -> None:
            if condition():
                action()
            else:
                self.at(self.t + self.timing.T / 100, check)
        check()

    def run_until(self, end: float) -> None:
        self.clock.run_until(end)

    def log(self, host: int | None, kind: str, text: str) -> None:
        self.trace.record(self.t, host, kind, text)

    # ------------------------------------------------------------ the master's view
    @property
    def pool_db(self) -> Pool:
        """The shared pool database, as the master left it."""
        return self.master.pool_db

    @property
    def vm_log(self) -> list[VMEvent]:
        return self.master.vm_log

    @property
    def alerts(self) -> list[tuple[float, int, Alert]]:
        return self.master.alerts

    def free_memory(self, index: int) -> int:
        return self.master.free_memory(index)

    # ------------------------------------------------------------ delivery
    def _deliver(self, host: SimHost, make: MakeInput) -> None:
        if host.core is None:
            return
        if host.paused_until > self.t:
            host.queue.append(make)
            return
        core = host.core
        carry_out(core.handle(make(self.local(host))), self._effects[host.index])
        if core.is_master and host.core is core:
            self.master.step(host)

    def _send(self, src: int, report: Report, to: Iterable[int]) -> None:
        if self.trace.beats:
            self.log(src, "BEAT", "heartbeat")
        for dst in to:
            for delay in self.network.deliveries(src, dst):
                self.at(self.t + delay, partial(self._receive, self.hosts[dst], report))

    def _receive(self, host: SimHost, report: Report) -> None:
        self._deliver(host, lambda now: HeartbeatReceived(now, report))

    def _wake(self, host: SimHost, at: float) -> None:
        """Deliver a Tick by ``at``; a tick already due no later than that will do."""
        if at == float("inf"):
            return
        due = max(host.clock.true_time(at), self.t)
        if host.wake_at is not None and self.t <= host.wake_at <= due:
            return
        host.wake_at = due
        boot = host.boot

        def tick() -> None:
            if host.boot == boot and host.wake_at == due:
                host.wake_at = None
                self._deliver(host, Tick)

        self.at(due, tick)

    # ------------------------------------------------------------ storage
    def _start_io(self, host: SimHost) -> None:
        if host.io_busy or not host.io_queue:
            return
        op = host.io_queue.pop(0)
        host.io_busy = True
        deadline = self.timing.io_deadline / host.clock.rate
        duration, ok = self.storage.duration(host.index, deadline, isinstance(op, WriteSlot))
        boot = host.boot

        def complete() -> None:
            if host.boot != boot:
                return
            host.io_busy = False
            if isinstance(op, WriteSlot):
                if ok:
                    self.storage.write(op.report)
                self._deliver(host, lambda now: SlotWritten(now, ok, "" if ok else "I/O failed"))
            else:
                slots = self.storage.read() if ok else None
                self._deliver(host, lambda now: SlotsRead(now, slots, "" if ok else "I/O failed"))
            self._start_io(host)

        self.at(self.t + duration, complete)

    # ------------------------------------------------------------ fencing
    def _pet(self, host: SimHost, which: Watchdog, timeout: float) -> None:
        expiry = self.t + timeout / host.clock.rate
        host.watchdog[which] = expiry
        boot = host.boot

        def check() -> None:
            due = host.watchdog.get(which)
            if host.boot == boot and host.core is not None and due is not None and (
                self.t >= due
            ):
                self._fence(host, f"{which.value} watchdog expired", by_core=False)

        self.at(expiry, check)

    def _stop_vms(self, host: SimHost) -> None:
        for vm in sorted(host.vms):
            self._vm_stopped(vm, host)
        host.vms.clear()

    def _vm_stopped(self, vm: str, host: SimHost) -> None:
        self.checker.vm_stopped(vm, host.index)
        self.log(host.index, "VM", f"{vm} stopped")
        self.vm_log.append(VMEvent(self.t, vm, host.index, "stopped"))

    def _take_down(self, host: SimHost, state: str, kind: str, text: str) -> HostCore | None:
        """Stop a host's daemon and VMs; return the core that ran, if any."""
        core = host.core
        if core is None:
            return None
        self.log(host.index, kind, text)
        self._stop_vms(host)
        self.master.resign(host)
        host.core = None
        host.state = state
        host.watchdog.clear()
        return core

    def _fence(self, host: SimHost, reason: str, by_core: bool) -> None:
        core = self._take_down(host, "fenced", "FENCE", reason)
        if core is None:
            return
        if by_core:
            last_words = core.fenced_report()
            if self.storage.duration(host.index, math.inf, write=True)[1]:
                self.storage.write(last_words)
            self._send(host.index, last_words, core._others())
        if self.config.reboot_after is not None:
            self.at(self.t + self.config.reboot_after, lambda: self.reboot(host.index))

    def _committed(self, host: SimHost, out: LivesetCommitted) -> None:
        parts = [f"liveset {sorted(out.liveset)}"]
        if out.removed:
            parts.append(f"removed {sorted(out.removed)}")
        if out.added:
            parts.append(f"added {sorted(out.added)}")
        self.log(host.index, "COMMIT", ", ".join(parts))
        self.commits.append((self.t, host.index, out))
        undead = {
            x for x in out.removed
            if self.hosts[x].vms or ((c := self.hosts[x].core) is not None and c.armed)
        }
        self.checker.committed(self.t, host.index, set(out.removed), undead)
        self.master.committed(host, out)

    # ------------------------------------------------------------ observations
    def survivors(self) -> frozenset[int]:
        return frozenset(h.index for h in self.hosts if h.core is not None and h.core.armed)

    def fenced(self) -> frozenset[int]:
        return frozenset(h.index for h in self.hosts if h.state == "fenced")

    def masters(self) -> frozenset[int]:
        return frozenset(h.index for h in self.hosts if h.core is not None and h.core.is_master)

    def vms_down(self) -> list[str]:
        """Protected VMs running nowhere."""
        return [vm.uuid for vm in self.pool_db.vms
                if vm.priority.protected and not self.checker.running.get(vm.uuid)]

    def unsettled(self) -> list[str]:
        """Why the pool is not settled (empty when it is): every host up, NORMAL,
        out of survival-rule-2 mode and holding the whole pool as its liveset,
        exactly one master, and every protected VM running."""
        everyone = self.members
        problems = []
        for host in self.hosts:
            if host.index not in everyone:
                continue
            core = host.core
            if core is None:
                problems.append(f"host {host.index} {host.state}")
            elif core.phase is not Phase.NORMAL or core.rule2 or core.liveset != everyone:
                mode = " (rule 2)" if core.rule2 else ""
                waits = "".join(f" ({w.text})" for w in core.waits())
                problems.append(f"host {host.index} {core.phase.name}{mode} with liveset "
                                f"{sorted(core.liveset or ())}{waits}")
        masters = sorted(self.masters())
        if len(masters) != 1:
            problems.append(f"masters {masters}")
        if down := self.vms_down():
            problems.append(f"protected VMs down {down}")
        return problems

    def restart_bound(self) -> float:
        """Fault to every protected VM running again, for this pool's order groups."""
        return restart_bound(self.timing, order_group_delays(self.pool_db), self.config.boot_time)

    def settle_bound(self) -> float:
        """Faults over (and dead hosts restarted) to a settled pool."""
        reboot = self.config.reboot_after if self.config.reboot_after is not None else 0.0
        return settle_bound(self.timing, reboot, order_group_delays(self.pool_db),
                            self.config.boot_time)

    def expect_settled(self, after: str, start: float | None = None) -> float:
        """Check at ``start + bound`` that the pool has settled; return that time."""
        due = (self.t if start is None else start) + self.settle_bound()

        self.at(due, lambda: self.checker.settle_due(self.t, after, self.unsettled()))
        return due

    def expect_restart(self, fault: str, start: float | None = None) -> None:
        """Check at ``start + bound`` that every protected VM runs again."""
        due = (self.t if start is None else start) + self.restart_bound()
        self.at(due, lambda: self.checker.restart_due(self.t, fault, self.vms_down()))


@dataclass
class _HostEffects:
    """One host's core outputs, carried out on the simulated world."""

    sim: Simulation
    host: SimHost

    def send_heartbeat(self, report: Report, to: HostSet) -> None:
        self.sim._send(self.host.index, report, to)

    def request_io(self, request: WriteSlot | ReadSlots) -> None:
        self.host.io_queue.append(request)
        self.sim._start_io(self.host)

    def pet_watchdog(self, which: Watchdog, timeout: float) -> None:
        self.sim._pet(self.host, which, timeout)

    def fence(self, reason: str) -> None:
        self.sim._fence(self.host, reason, by_core=True)

    def disarmed(self, reason: str) -> None:
        self.host.watchdog.clear()

    def liveset_committed(self, commit: LivesetCommitted) -> None:
        self.sim._committed(self.host, commit)

    def master_gained(self) -> None:
        others = {h.index for h in self.sim.hosts
                  if h is not self.host and h.core is not None and h.core.is_master}
        self.sim.log(self.host.index, "MASTER", "gained the master lock")
        self.sim.master.pass_due = True
        self.sim.checker.master_gained(self.sim.t, self.host.index, others)

    def master_lost(self, reason: str) -> None:
        self.sim.log(self.host.index, "MASTER", f"lost the master lock: {reason}")
        self.sim.master.resign(self.host)

    def phase_changed(self, change: PhaseChanged) -> None:
        self.sim.log(self.host.index, "PHASE",
                     f"{change.old.name} -> {change.new.name}: {change.why}")

    def suspect(self, host: int, channel: str) -> None:
        self.sim.log(self.host.index, "SUSPECT", f"host {host} missing on {channel}")

    def waiting(self, waits: tuple[Wait, ...]) -> None:
        self.sim.log(self.host.index, "WAIT", "; ".join(w.text for w in waits)
                     or "no longer waiting")

    def wake_at(self, at: float) -> None:
        self.sim._wake(self.host, at)
