"""The pool model: hosts, storage, networks and the VMs HA protects.

Rules (spec sections 1 and 8):

* Objects are immutable values identified by uuid; a :class:`Pool` lists its
  hosts in HA index order (host ``i`` of the liveness core is ``pool.hosts[i]``).
  Every collection is kept sorted by uuid, so every answer derived from a pool
  is deterministic.
* Memory is in MiB (whole numbers); a VM's planned size is its static maximum.
* A VM is **agile** when every disk is on a shared SR plugged on every enabled
  host, every network is plugged on every enabled host, it has no local CD,
  and some enabled host offers every passthrough/GPU device class it needs.
  :func:`agility` names every reason it is not, with what would fix it. A
  non-agile VM is pinned: its memory is overhead on its host and it can never
  be restarted elsewhere.
* A VM is started once its process has lived 0.2 s, with ``ready =
  "file"`` once it created its ready file (it says it is ready), or with
  ``ready = "command"`` once its readiness command (the pool file's
  ``ready_command``) exits 0: the next order group, and its ``start_delay``,
  wait for that.
* A VM with device classes runs only on a host that offers them all
  (:meth:`Pool.can_host`); a host's ``devices`` are the classes it offers.
* GPU and passthrough VMs may only be best-effort: a VM with a device and
  priority ``restart`` cannot be made, by a pool file, a change or an install.
* A best-effort VM gets ``best_effort_attempts`` restart tries per episode
  (1, as the seed says, unless set: 1 to :data:`MAX_BEST_EFFORT_ATTEMPTS`).
* A host's **free memory** for restarts is its total, less its own overhead,
  less every VM resident on it that is running.
* A VM is ``running`` (on its resident host), ``halted`` or ``suspended``
  (its state saved on its disks, on no host): only a running VM has a
  resident host. HA never starts a suspended VM: it is resumed by the
  operator.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum

MAX_BEST_EFFORT_ATTEMPTS = 100
READINESS = ("", "file", "command")


class PoolError(ValueError):
    """An object or change the pool cannot accept, with the reason."""


class Priority(Enum):
    RESTART = "restart"
    BEST_EFFORT = "best-effort"
    NONE = ""

    @property
    def protected(self) -> bool:
        return self is Priority.RESTART

    @property
    def label(self) -> str:
        return self.value or "unprotected"


class Power(Enum):
    RUNNING = "running"
    HALTED = "halted"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class Host:
    uuid: str
    name: str
    memory_total: int
    memory_overhead: int = 0
    enabled: bool = True
    address: str = ""
    devices: tuple[str, ...] = ()  # passthrough/GPU device classes it offers

    def __post_init__(self) -> None:
        if self.memory_total < 0 or self.memory_overhead < 0:
            raise PoolError(f"host {self.name}: memory must not be negative")
        if self.memory_overhead > self.memory_total:
            raise PoolError(f"host {self.name}: overhead {self.memory_overhead} MiB exceeds "
                            f"its memory {self.memory_total} MiB")


@dataclass(frozen=True)
class SR:
    uuid: str
    name: str
    shared: bool
    plugged: frozenset[str] = frozenset()  # host uuids


@dataclass(frozen=True)
class Network:
    uuid: str
    name: str
    plugged: frozenset[str] = frozenset()  # host uuids


@dataclass(frozen=True)
class VM:
    uuid: str
    name: str
    memory: int
    priority: Priority = Priority.NONE
    order: int = 0
    start_delay: float = 0.0
    power: Power = Power.HALTED
    resident: str | None = None  # host uuid while running
    disks: tuple[str, ...] = ()  # SR uuids of its VDIs
    networks: tuple[str, ...] = ()
    local_cd: bool = False
    devices: tuple[str, ...] = ()  # passthrough/GPU device classes it needs
    ready: str = ""  # "": after 0.2 s of life; "file": its ready file; "command": a check

    def __post_init__(self) -> None:
        if self.ready not in READINESS:
            raise PoolError(f"VM {self.name}: ready must be one of "
                            f"{', '.join(repr(r) for r in READINESS)}, got {self.ready!r}")
        if self.memory <= 0:
            raise PoolError(f"VM {self.name}: memory must be positive, got {self.memory}")
        if self.order < 0:
            raise PoolError(f"VM {self.name}: order must be 0 or more, got {self.order}")
        if self.start_delay < 0:
            raise PoolError(f"VM {self.name}: start-delay must be 0 or more")
        if self.priority.protected and self.devices:
            raise PoolError(f"VM {self.name} has passthrough/GPU device(s) {list(self.devices)}: "
                            "it can only be protected as best-effort")
        if (self.power is Power.RUNNING) != (self.resident is not None):
            raise PoolError(f"VM {self.name}: a running VM needs a resident host, "
                            "a halted or suspended one has none")

    @property
    def running(self) -> bool:
        return self.power is Power.RUNNING


@dataclass(frozen=True)
class Pool:
    hosts: tuple[Host, ...]
    vms: tuple[VM, ...] = ()
    srs: tuple[SR, ...] = ()
    networks: tuple[Network, ...] = ()
    host_failures_to_tolerate: int = 0
    allow_overcommit: bool = False
    reboot_vm_on_internal_shutdown: bool = True
    best_effort_attempts: int = 1  # restart tries of a best-effort VM per episode
    _index: _Index = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for kind, items in (("host", self.hosts), ("VM", self.vms), ("SR", self.srs),
                            ("network", self.networks)):
            uuids = [item.uuid for item in items]
            if len(set(uuids)) != len(uuids):
                raise PoolError(f"two {kind}s share a uuid")
        object.__setattr__(self, "vms", tuple(sorted(self.vms, key=lambda v: v.uuid)))
        object.__setattr__(self, "srs", tuple(sorted(self.srs, key=lambda s: s.uuid)))
        object.__setattr__(self, "networks", tuple(sorted(self.networks, key=lambda n: n.uuid)))
        index = _Index(self)
        object.__setattr__(self, "_index", index)
        for vm in self.vms:
            if vm.resident is not None and vm.resident not in index.hosts:
                raise PoolError(f"VM {vm.name} is resident on unknown host {vm.resident}")
        if not 1 <= self.best_effort_attempts <= MAX_BEST_EFFORT_ATTEMPTS:
            raise PoolError(f"ha-best-effort-attempts must be 1..{MAX_BEST_EFFORT_ATTEMPTS}, "
                            f"got {self.best_effort_attempts}")
        if not 0 <= self.host_failures_to_tolerate < max(1, len(self.hosts)):
            raise PoolError(f"ha-host-failures-to-tolerate must be 0..{len(self.hosts) - 1}, "
                            f"got {self.host_failures_to_tolerate}")

    # ------------------------------------------------------------ look-ups
    def vm(self, uuid: str) -> VM:
        try:
            return self._index.vms[uuid]
        except KeyError:
            raise PoolError(f"no VM with uuid {uuid}") from None

    def host(self, uuid: str) -> Host:
        try:
            return self._index.hosts[uuid]
        except KeyError:
            raise PoolError(f"no host with uuid {uuid}") from None

    def index_of(self, host_uuid: str) -> int:
        return [h.uuid for h in self.hosts].index(self.host(host_uuid).uuid)

    def enabled_hosts(self) -> frozenset[str]:
        return self._index.enabled

    def resident_on(self, host_uuid: str) -> tuple[VM, ...]:
        return tuple(vm for vm in self.vms if vm.resident == host_uuid)

    def can_host(self, vm: VM, host_uuid: str) -> bool:
        """Does the host offer every device class ``vm`` needs?"""
        return set(vm.devices) <= set(self.host(host_uuid).devices)

    def free_memory(self, host_uuid: str) -> int:
        host = self.host(host_uuid)
        return host.memory_total - host.memory_overhead - self._index.used.get(host_uuid, 0)

    # ------------------------------------------------------------ changes
    def with_vm(self, vm: VM) -> Pool:
        """This pool with ``vm`` added or replaced (by uuid)."""
        others = tuple(v for v in self.vms if v.uuid != vm.uuid)
        return replace(self, vms=(*others, vm))

    def with_vms(self, vms: Iterable[VM]) -> Pool:
        changed = {vm.uuid: vm for vm in vms}
        return replace(self, vms=tuple(changed.get(v.uuid, v) for v in self.vms))


class _Index:
    """Look-ups of one (immutable) pool, built once: by uuid, enabled hosts, and
    the memory of the VMs resident on each host."""

    def __init__(self, pool: Pool) -> None:
        self.vms = {vm.uuid: vm for vm in pool.vms}
        self.hosts = {h.uuid: h for h in pool.hosts}
        self.srs = {sr.uuid: sr for sr in pool.srs}
        self.networks = {net.uuid: net for net in pool.networks}
        self.enabled = frozenset(h.uuid for h in pool.hosts if h.enabled)
        self.used: dict[str, int] = {}
        for vm in pool.vms:
            if vm.resident is not None:
                self.used[vm.resident] = self.used.get(vm.resident, 0) + vm.memory


# ---------------------------------------------------------------- agility
@dataclass(frozen=True)
class Reason:
    """Why a VM is not agile, and what would make it so."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} (fix: {self.fix})"


def agility(pool: Pool, vm: VM) -> list[Reason]:
    """Every reason ``vm`` cannot be restarted on any enabled host; empty when agile."""
    enabled = pool.enabled_hosts()
    srs, networks = pool._index.srs, pool._index.networks
    reasons: list[Reason] = []
    for sr_uuid in vm.disks:
        sr = srs.get(sr_uuid)
        if sr is None:
            reasons.append(Reason(f"a disk is on unknown SR {sr_uuid}", "remove or move that disk"))
        elif not sr.shared:
            reasons.append(Reason(f"a disk is on local SR {sr.name}",
                                  "move the disk to a shared SR"))
        elif missing := sorted(enabled - sr.plugged):
            reasons.append(Reason(f"shared SR {sr.name} is not plugged on host(s) "
                                  f"{_names(pool, missing)}", "plug the SR on every host"))
    for net_uuid in vm.networks:
        net = networks.get(net_uuid)
        if net is None:
            reasons.append(Reason(f"an interface is on unknown network {net_uuid}",
                                  "remove that interface"))
        elif missing := sorted(enabled - net.plugged):
            reasons.append(Reason(f"network {net.name} is missing on host(s) "
                                  f"{_names(pool, missing)}",
                                  "create the network on every host"))
    if vm.local_cd:
        reasons.append(Reason("a CD from a host's local drive is inserted", "eject the CD"))
    if vm.devices and not any(pool.can_host(vm, h) for h in enabled):
        reasons.append(Reason(f"no enabled host offers its device class(es) "
                              f"{', '.join(vm.devices)}",
                              "give a host those devices (its 'devices'), or detach them"))
    return reasons


def is_agile(pool: Pool, vm: VM) -> bool:
    return not agility(pool, vm)


def diagnostic_vm_status(pool: Pool, vm_uuid: str) -> list[str]:
    """``diagnostic-vm-status``: one line for the verdict, then one per reason."""
    vm = pool.vm(vm_uuid)
    reasons = agility(pool, vm)
    lines = [f"VM {vm.name} ({vm.uuid}): priority {vm.priority.label}, order {vm.order}, "
             f"{vm.memory} MiB, {vm.power.value}"
             + (f" on {pool.host(vm.resident).name}" if vm.resident else "")]
    if not reasons and vm.devices:
        capable = sorted(h.name for h in pool.hosts if h.enabled and pool.can_host(vm, h.uuid))
        lines.append(f"agile among the hosts with its device class(es) "
                     f"{', '.join(vm.devices)}: {', '.join(capable)}")
    elif not reasons:
        lines.append("agile: it can be restarted on any enabled host with room")
    else:
        lines.append("not agile: pinned to its host, never restarted elsewhere, because")
        lines += [f"  - {reason}" for reason in reasons]
    return lines


def _names(pool: Pool, host_uuids: Iterable[str]) -> str:
    names = {h.uuid: h.name for h in pool.hosts}
    return ", ".join(names.get(u, u) for u in host_uuids)
