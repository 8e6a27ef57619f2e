"""The faults a simulation can inject, as methods of :class:`~hacluster.sim.cluster.Simulation`.

Rules:

* A crash kills daemon and VMs with no last words; its in-flight I/O and
  timers are void. A reboot starts a new boot joining the pool, given what
  its slot holds if its storage answers (as the daemon reads it on starting).
* A paused daemon receives nothing until it resumes (inputs queue); on
  resuming it takes its queued inputs, then a tick, then the agent requests
  that waited in its socket. Its VMs, I/O and watchdogs run on meanwhile.
* A VM that stops by itself is recorded by its host's agent for the master.
* An operator's shutdown or suspend (:meth:`FaultInjection.operator_stop`) is
  what ``vm-shutdown`` and ``vm-suspend`` do: the host stops the VM on
  purpose (a ``stopped`` exit) and the master's duties learn it.
* A clean shutdown announces "excluded" while the host is still up.
* **Membership.** An eject asks the host to leave (a clean shutdown; the
  request is lost while its daemon is paused or down), frees its slot and
  publishes the new member table; a join publishes it, then starts a new
  host (a new boot) on the free index. Each live host reads a new table
  within t2 of its publication (as from the SR), older tables never
  overriding newer ones; a host booting reads the current one. Hosts that
  are not members are never rebooted.
* Network faults cut directed links (a partition or isolation cuts both
  ways); storage faults act per host; every fault is written to the trace.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Protocol

from hacluster.core.events import MembersChanged, Shutdown, Tick
from hacluster.core.messages import HostSet
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.pool import Power
from hacluster.core.restarts import Stopped
from hacluster.core.timing import Timing
from hacluster.sim.config import SimConfig
from hacluster.sim.hosts import MakeInput, SimHost
from hacluster.sim.master import SimMaster
from hacluster.sim.network import SimNetwork
from hacluster.sim.storage import IOFault, SimStorage


class World(Protocol):
    """What fault injection needs of the simulation."""

    config: SimConfig
    core_config: CoreConfig
    timing: Timing
    rng: random.Random
    members: HostSet
    members_version: int
    hosts: list[SimHost]
    network: SimNetwork
    storage: SimStorage
    master: SimMaster

    @property
    def t(self) -> float: ...
    def local(self, host: SimHost, t: float | None = None) -> float: ...
    def at(self, t: float, action: Callable[[], None]) -> None: ...
    def log(self, host: int | None, kind: str, text: str) -> None: ...
    def _deliver(self, host: SimHost, make: MakeInput) -> None: ...
    def _vm_stopped(self, vm: str, host: SimHost) -> None: ...
    def _take_down(self, host: SimHost, state: str, kind: str,
                   text: str) -> HostCore | None: ...
    def storage_fault(self, index: int, fault: IOFault) -> None: ...


class FaultInjection:
    def crash(self: World, index: int) -> None:
        host = self.hosts[index]
        if self._take_down(host, "crashed", "FAULT", "crash") is not None:
            host.boot += 1  # in-flight I/O and timers of the old boot are void

    def reboot(self: World, index: int) -> None:
        host = self.hosts[index]
        if host.core is not None or index not in self.members:
            return
        self.log(index, "FAULT", "reboot: rejoining")
        FaultInjection._boot(self, host)

    def _boot(self: World, host: SimHost) -> None:
        """Start a new boot of ``host``, joining with the current member table."""
        host.new_boot()
        host.members_version = self.members_version
        config = replace(self.core_config, members=self.members)
        host.core = HostCore(config, host.index, host.boot, self.local(host),
                             previous=self.storage.own_slot(host.index))
        self._deliver(host, Tick)

    def join(self: World, index: int) -> None:
        """A new host takes the free index ``index`` and joins the pool."""
        host = self.hosts[index]
        if index in self.members or host.core is not None:
            return
        FaultInjection._publish_members(self, self.members | {index}, f"join {index}")
        FaultInjection._boot(self, host)

    def eject(self: World, index: int) -> None:
        """Eject ``index``: ask it to leave, free its slot, publish the member table."""
        host = self.hosts[index]
        if index not in self.members or len(self.members) == 1:
            return
        if host.core is not None and host.paused_until <= self.t:
            FaultInjection.shutdown(self, index)
        else:
            self.log(index, "MEMBERS", "the request to leave is lost: the daemon is "
                     + ("paused" if host.core is not None else "down"))
        self.storage.free(index)
        FaultInjection._publish_members(self, self.members - {index}, f"eject {index}")

    def _publish_members(self: World, members: HostSet, why: str) -> None:
        self.members_version += 1
        self.members = members
        version = self.members_version
        self.log(None, "MEMBERS", f"{why}: members {sorted(members)} (table {version})")
        for host in self.hosts:
            if host.core is not None:
                read_at = self.t + self.rng.uniform(0, self.timing.t2)
                self.at(read_at, partial(FaultInjection._read_members, self, host,
                                         members, version))

    def _read_members(self: World, host: SimHost, members: HostSet, version: int) -> None:
        if host.core is None or version <= host.members_version:
            return
        host.members_version = version
        self._deliver(host, lambda now: MembersChanged(now, members))

    def vm_exit(self: World, vm: str, internal_shutdown: bool = False) -> None:
        """``vm`` stops by itself: shut down from inside its guest, or crashed."""
        host = next((h for h in self.hosts if vm in h.vms), None)
        if host is None:
            return
        how = "shut down from inside its guest" if internal_shutdown else "crashed"
        self.log(host.index, "FAULT", f"{vm} {how}")
        host.vms.discard(vm)
        self._vm_stopped(vm, host)
        host.record_exit(vm, "internal-shutdown" if internal_shutdown else "crash")

    def operator_stop(self: World, vm: str, power: Power) -> None:
        """The operator shuts ``vm`` down (``HALTED``) or suspends it (``SUSPENDED``)."""
        host = next((h for h in self.hosts if vm in h.vms), None)
        if host is None:
            return
        self.log(None, "OPERATOR", f"{vm} {power.value}")
        host.vms.discard(vm)
        self._vm_stopped(vm, host)
        host.record_exit(vm, "stopped")
        self.master.tell(lambda now: Stopped(now, vm, power))

    def pause_restarts(self: World, seconds: float) -> None:
        """``ha_prevent_restarts_for``: the master starts nothing for ``seconds``."""
        self.log(None, "OPERATOR", f"restarts paused for {seconds:.2f}s")
        self.master.pause_restarts(seconds)

    def pause(self: World, index: int, seconds: float) -> None:
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
            requests, host.requests = host.requests, []
            for request in requests:
                request()

        self.at(self.t + seconds, resume)

    def shutdown(self: World, index: int) -> None:
        host = self.hosts[index]
        if host.core is not None:
            self._deliver(host, Shutdown)  # announce "excluded" while still up
            self._take_down(host, "excluded", "FAULT", "clean shutdown")

    def partition(self: World, groups: Iterable[Iterable[int]]) -> None:
        groups = [sorted(g) for g in groups]
        self.log(None, "FAULT", f"partition {' | '.join(','.join(map(str, g)) for g in groups)}")
        self.network.partition(groups)

    def isolate(self: World, index: int) -> None:
        self.log(index, "FAULT", "network isolated")
        self.network.isolate(index, self.config.hosts)

    def drop_from(self: World, src: int, dst: int) -> None:
        self.log(None, "FAULT", f"one-way link: host {src} -> host {dst} dropped")
        self.network.drop_from(src, dst)

    def cut_link(self: World, a: int, b: int) -> None:
        self.log(None, "FAULT", f"link between host {a} and host {b} cut")
        self.network.drop_from(a, b)
        self.network.drop_from(b, a)

    def heal_network(self: World) -> None:
        self.log(None, "FAULT", "network healed")
        self.network.heal()

    def storage_fault(self: World, index: int, fault: IOFault) -> None:
        self.log(index, "FAULT", f"storage {fault.value}")
        if fault is IOFault.OK:
            self.storage.faults.pop(index, None)
        else:
            self.storage.faults[index] = fault

    def storage_fault_all(self: World, fault: IOFault) -> None:
        for index in range(self.config.hosts):
            self.storage_fault(index, fault)

    def corrupt_slot(self: World, index: int, corrupted: bool = True) -> None:
        self.log(index, "FAULT", "slot corrupted" if corrupted else "slot corruption cleared")
        if corrupted:
            self.storage.corrupted.add(index)
        else:
            self.storage.corrupted.discard(index)
