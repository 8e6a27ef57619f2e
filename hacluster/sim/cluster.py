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
* The master (whoever the cores say holds the lock) keeps every VM placed on a
  host of its liveset, restarting VMs of hosts it no longer has.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from hacluster.core.events import (
    Disarmed,
    Fence,
    HeartbeatReceived,
    Input,
    LivesetCommitted,
    MasterGained,
    MasterLost,
    Output,
    PetWatchdog,
    PhaseChanged,
    ReadSlots,
    SendHeartbeat,
    Shutdown,
    SlotsRead,
    SlotWritten,
    Suspect,
    Tick,
    Wakeup,
    Watchdog,
    WriteSlot,
)
from hacluster.core.messages import Report
from hacluster.core.node import CoreConfig, HostCore, Mode
from hacluster.core.timing import Timing
from hacluster.sim.checker import Checker, restart_bound
from hacluster.sim.network import NetworkConditions, SimNetwork
from hacluster.sim.storage import IOFault, SimStorage
from hacluster.sim.trace import Trace

MakeInput = Callable[[float], Input]


@dataclass
class SimConfig:
    hosts: int
    seed: int
    timeout: float = 5.0
    mode: Mode = Mode.STATEFILE
    vms_per_host: int = 2
    skew: float = 0.005
    network: NetworkConditions = field(default_factory=NetworkConditions)
    reboot_after: float | None = None
    timing: Timing | None = None
    cold_start: bool = False  # hosts start joining, with no liveset (clustered mode)

    def resolved_timing(self) -> Timing:
        return self.timing if self.timing is not None else Timing.derive(self.timeout)


@dataclass
class SimHost:
    index: int
    rate: float
    offset: float
    core: HostCore | None = None
    boot: int = 0
    state: str = "up"  # up, crashed, fenced, excluded
    paused_until: float = 0.0
    queue: list[MakeInput] = field(default_factory=list)
    wake_at: float | None = None  # true time of the pending tick
    watchdog: dict[Watchdog, float] = field(default_factory=dict)
    io_queue: list[WriteSlot | ReadSlots] = field(default_factory=list)
    io_busy: bool = False
    vms: set[str] = field(default_factory=set)

    @property
    def alive(self) -> bool:
        return self.core is not None


class Simulation:
    def __init__(self, config: SimConfig, trace: Trace | None = None) -> None:
        self.config = config
        self.timing = config.resolved_timing()
        self.rng = random.Random(config.seed)
        self.trace = trace if trace is not None else Trace(keep=400)
        self.checker = Checker(self.trace)
        self.core_config = CoreConfig(
            self.timing, config.hosts, generation=self.rng.getrandbits(63), mode=config.mode
        )
        self.network = SimNetwork(self.rng, config.network)
        self.storage = SimStorage(config.hosts)
        self.t = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.hosts = [
            SimHost(i, rate=1 + self.rng.uniform(-config.skew, config.skew),
                    offset=self.rng.uniform(100, 10_000))
            for i in range(config.hosts)
        ]
        self.vms = [f"vm-{i}" for i in range(config.hosts * config.vms_per_host)]
        self.placement: dict[str, int | None] = dict.fromkeys(self.vms)
        self._next_pass = 0.0
        self._pass_due = True
        everyone = frozenset(range(config.hosts))
        for host in self.hosts:
            host.boot = 1
            host.core = HostCore(self.core_config, host.index, host.boot, self.local(host),
                                 liveset=None if config.cold_start else everyone)
            self._deliver(host, Tick)

    # ------------------------------------------------------------ time
    def local(self, host: SimHost, t: float | None = None) -> float:
        return host.offset + host.rate * (self.t if t is None else t)

    def true_time(self, host: SimHost, local: float) -> float:
        """The first true time at which ``host``'s clock reads ``local`` or later."""
        t = (local - host.offset) / host.rate
        while self.local(host, t) < local:  # floating-point rounding
            t = math.nextafter(t, math.inf)
        return t

    def at(self, t: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(t, self.t), self._seq, action))

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0][0] <= end:
            t, _, action = heapq.heappop(self._queue)
            self.t = t
            action()
        self.t = max(self.t, end)

    def log(self, host: int | None, kind: str, text: str) -> None:
        self.trace.record(self.t, host, kind, text)

    # ------------------------------------------------------------ delivery
    def _deliver(self, host: SimHost, make: MakeInput) -> None:
        if host.core is None:
            return
        if host.paused_until > self.t:
            host.queue.append(make)
            return
        outputs = host.core.handle(make(self.local(host)))
        self._apply(host, outputs)

    def _apply(self, host: SimHost, outputs: list[Output]) -> None:
        core = host.core
        for out in outputs:
            if isinstance(out, SendHeartbeat):
                self._send(host.index, out.report, out.to)
            elif isinstance(out, WriteSlot | ReadSlots):
                host.io_queue.append(out)
                self._start_io(host)
            elif isinstance(out, PetWatchdog):
                self._pet(host, out)
            elif isinstance(out, Fence):
                self._fence(host, out.reason, by_core=True)
            elif isinstance(out, Disarmed):
                host.watchdog.clear()
            elif isinstance(out, LivesetCommitted):
                self._committed(host, out)
            elif isinstance(out, MasterGained):
                others = {h.index for h in self.hosts
                          if h is not host and h.core is not None and h.core.is_master}
                self.log(host.index, "MASTER", "gained the master lock")
                self._pass_due = True
                self.checker.master_gained(self.t, host.index, others)
            elif isinstance(out, MasterLost):
                self.log(host.index, "MASTER", f"lost the master lock: {out.reason}")
            elif isinstance(out, PhaseChanged):
                self.log(host.index, "PHASE", f"{out.old.name} -> {out.new.name}: {out.why}")
            elif isinstance(out, Suspect):
                self.log(host.index, "SUSPECT", f"host {out.host} missing on {out.channel}")
            elif isinstance(out, Wakeup):
                self._wake(host, out.at)
        if core is not None and core.is_master and host.core is core:
            self._master_pass(host)

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
        due = max(self.true_time(host, at), self.t)
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
        deadline = self.timing.io_deadline / host.rate
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
    def _pet(self, host: SimHost, pet: PetWatchdog) -> None:
        expiry = self.t + pet.timeout / host.rate
        host.watchdog[pet.which] = expiry
        boot = host.boot

        def check() -> None:
            due = host.watchdog.get(pet.which)
            if host.boot == boot and host.core is not None and due is not None and (
                self.t >= due
            ):
                self._fence(host, f"{pet.which.value} watchdog expired", by_core=False)

        self.at(expiry, check)

    def _stop_vms(self, host: SimHost) -> None:
        for vm in sorted(host.vms):
            self.checker.vm_stopped(vm, host.index)
            self.log(host.index, "VM", f"{vm} stopped")
        host.vms.clear()

    def _take_down(self, host: SimHost, state: str, kind: str, text: str) -> HostCore | None:
        """Stop a host's daemon and VMs; return the core that ran, if any."""
        core = host.core
        if core is None:
            return None
        self.log(host.index, kind, text)
        self._stop_vms(host)
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
        undead = {
            x for x in out.removed
            if self.hosts[x].vms or ((c := self.hosts[x].core) is not None and c.armed)
        }
        self._pass_due = True
        self.checker.committed(self.t, host.index, set(out.removed), undead)

    # ------------------------------------------------------------ master duties
    def _master_pass(self, master: SimHost) -> None:
        if not self._pass_due and self.t < self._next_pass:
            return
        self._pass_due = False
        self._next_pass = self.t + self.timing.t1
        core = master.core
        assert core is not None and core.liveset is not None
        liveset = core.liveset
        load = {h: 0 for h in liveset}
        for h in self.placement.values():
            if h in load:
                load[h] += 1
        for vm in self.vms:
            current = self.placement[vm]
            if current is not None and current in liveset:
                continue
            if current is not None:
                self.placement[vm] = None
                self.log(master.index, "VM", f"{vm} of host {current} marked halted")
            for target in sorted(liveset, key=lambda h: (load[h], h)):
                if self._start_vm(master, vm, target):
                    load[target] += 1
                    break

    def _start_vm(self, master: SimHost, vm: str, target: int) -> bool:
        host = self.hosts[target]
        if host.core is None or not host.core.armed or host.paused_until > self.t:
            return False
        self.placement[vm] = target
        host.vms.add(vm)
        self.log(master.index, "VM", f"{vm} started on host {target}")
        self.checker.vm_started(self.t, vm, target)
        return True

    # ------------------------------------------------------------ faults
    def crash(self, index: int) -> None:
        host = self.hosts[index]
        if self._take_down(host, "crashed", "FAULT", "crash") is not None:
            host.boot += 1  # in-flight I/O and timers of the old boot are void

    def reboot(self, index: int) -> None:
        host = self.hosts[index]
        if host.core is not None:
            return
        self.log(index, "FAULT", "reboot: rejoining")
        host.boot += 1
        host.wake_at = None
        host.state = "up"
        host.io_queue.clear()
        host.io_busy = False
        host.paused_until = 0.0
        host.queue.clear()
        host.core = HostCore(self.core_config, index, host.boot, self.local(host))
        self._deliver(host, Tick)

    def pause(self, index: int, seconds: float) -> None:
        host = self.hosts[index]
        self.log(index, "FAULT", f"daemon paused for {seconds:.2f}s")
        host.paused_until = self.t + seconds
        boot = host.boot

        def resume() -> None:
            if host.boot != boot or host.core is None:
                return
            self.log(index, "FAULT", "daemon resumed")
            queued, host.queue = host.queue, []
            for make in queued:
                self._deliver(host, make)
            self._deliver(host, Tick)

        self.at(self.t + seconds, resume)

    def shutdown(self, index: int) -> None:
        host = self.hosts[index]
        if host.core is not None:
            self._deliver(host, Shutdown)  # announce "excluded" while still up
            self._take_down(host, "excluded", "FAULT", "clean shutdown")

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        groups = [sorted(g) for g in groups]
        self.log(None, "FAULT", f"partition {' | '.join(','.join(map(str, g)) for g in groups)}")
        self.network.partition(groups)

    def isolate(self, index: int) -> None:
        self.log(index, "FAULT", "network isolated")
        self.network.isolate(index, self.config.hosts)

    def drop_from(self, src: int, dst: int) -> None:
        self.log(None, "FAULT", f"one-way link: host {src} -> host {dst} dropped")
        self.network.drop_from(src, dst)

    def cut_link(self, a: int, b: int) -> None:
        self.log(None, "FAULT", f"link between host {a} and host {b} cut")
        self.network.drop_from(a, b)
        self.network.drop_from(b, a)

    def heal_network(self) -> None:
        self.log(None, "FAULT", "network healed")
        self.network.heal()

    def storage_fault(self, index: int, fault: IOFault) -> None:
        self.log(index, "FAULT", f"storage {fault.value}")
        if fault is IOFault.OK:
            self.storage.faults.pop(index, None)
        else:
            self.storage.faults[index] = fault

    def storage_fault_all(self, fault: IOFault) -> None:
        for index in range(self.config.hosts):
            self.storage_fault(index, fault)

    def corrupt_slot(self, index: int, corrupted: bool = True) -> None:
        self.log(index, "FAULT", "slot corrupted" if corrupted else "slot corruption cleared")
        if corrupted:
            self.storage.corrupted.add(index)
        else:
            self.storage.corrupted.discard(index)

    # ------------------------------------------------------------ observations
    def survivors(self) -> frozenset[int]:
        return frozenset(h.index for h in self.hosts if h.core is not None and h.core.armed)

    def fenced(self) -> frozenset[int]:
        return frozenset(h.index for h in self.hosts if h.state == "fenced")

    def masters(self) -> frozenset[int]:
        return frozenset(h.index for h in self.hosts if h.core is not None and h.core.is_master)

    def vms_down(self) -> list[str]:
        return [vm for vm in self.vms if not self.checker.running.get(vm)]

    def expect_restart(self, fault: str, start: float | None = None) -> None:
        """Check at ``start + bound`` that every VM runs again."""
        due = (self.t if start is None else start) + restart_bound(self.timing)
        self.at(due, lambda: self.checker.restart_due(self.t, fault, self.vms_down()))
