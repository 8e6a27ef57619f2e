"""The faults a simulation can inject, as methods of :class:`~hacluster.sim.cluster.Simulation`.

Rules:

* A crash kills daemon and VMs with no last words; its in-flight I/O and
  timers are void. A reboot starts a new boot joining the pool, given what
  its slot holds if its storage answers (as the daemon reads it on starting).
* A paused daemon receives nothing until it resumes (inputs queue); on
  resuming it takes its queued inputs, then a tick, then the agent requests
  that waited in its socket. Its VMs, I/O and watchdogs run on meanwhile.
* A VM that stops by itself is recorded by its host's agent for the master.
* A clean shutdown announces "excluded" while the host is still up.
* Network faults cut directed links (a partition or isolation cuts both
  ways); storage faults act per host; every fault is written to the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from hacluster.core.events import Shutdown, Tick
from hacluster.core.node import CoreConfig, HostCore
from hacluster.sim.config import SimConfig
from hacluster.sim.hosts import MakeInput, SimHost
from hacluster.sim.master import SimMaster
from hacluster.sim.network import SimNetwork
from hacluster.sim.storage import IOFault, SimStorage


class World(Protocol):
    """What fault injection needs of the simulation."""

    config: SimConfig
    core_config: CoreConfig
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
        if host.core is not None:
            return
        self.log(index, "FAULT", "reboot: rejoining")
        host.new_boot()
        host.core = HostCore(self.core_config, index, host.boot, self.local(host),
                             previous=self.storage.own_slot(index))
        self._deliver(host, Tick)

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
