"""The VM lifecycle verbs: install, start, shut down, reboot, suspend, resume, migrate.

Rules:

* Every verb reads the master's live view (where a VM runs now) and records
  the operator's doing in the pool database (``vm-power``) *before* acting on
  a host, so a master that dies half-way leaves a successor the operator's
  intent; if the host then refuses, the record is put back as it was and the
  call fails saying why.
* While HA is on and overcommit is not allowed, an operation that would leave
  the plan short of ``ha-host-failures-to-tolerate`` (starting, resuming or
  migrating a VM; installing or protecting a halted VM, which HA then starts
  at once) is refused with the numbers, unless ``--force``: then it
  proceeds and the master raises ``ha_pool_overcommitted``.
* ``vm-shutdown`` of a protected VM is refused with the instruction to remove
  its protection first (the pool database's rule, checked before anything is
  done); ``vm-suspend`` is allowed: HA never starts a suspended VM.
* A VM HA is starting right now is refused, with "try again when it runs";
  a protected VM halted while HA is on is HA's to start, not the operator's.
* A target host (``host=`` uuid or name) must be live, enabled, offer the
  VM's device classes and have its memory free; without one the planner's
  best fit among such hosts is chosen. A VM that
  is not agile must be given its host. ``vm-migrate`` is a cold move (stopped,
  then started): a process workload cannot move live, and the answer says so.
* ``pool-ha-rebalance`` moves protected and best-effort VMs back to their
  homes (:mod:`hacluster.core.rebalance`), one at a time, each re-checked on
  the live view just before it moves, each a cold move (stopped, then
  started: never running twice); ``--dry-run`` lists the moves and makes none.
  The master runs it by itself some seconds after a host joins the liveset
  when ``other-config:ha-rebalance=auto``.
* ``vm-install`` makes a halted VM running the pool's guest program: no
  credential chooses what root runs on a host (a VM with its own command is
  declared in the pool file, by whoever deploys the pool).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any
from uuid import uuid4

from hacluster.core.planner import place_vms
from hacluster.core.pool import VM, PoolError, Power, Priority, agility
from hacluster.core.pooldb import apply
from hacluster.core.rebalance import RANK, Move, homes, moves, next_move
from hacluster.core.recovery import overcommitted, tolerance
from hacluster.mgmt.handlers import Answer, Handlers


class VMVerbs(Handlers):
    # ------------------------------------------------------------ install
    async def _vm_install(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        uuid = params.get("uuid") or str(uuid4())
        change = {"op": "vm-install", "vm": uuid,
                  "fields": {k: v for k, v in params.items() if k != "uuid"}}
        vm = apply(self._db().db, change).pool.vm(uuid)  # refused here: nothing changed
        if vm.priority.protected and self._ha_on():
            self._plan_holds(vm, None, f"installing protected VM {vm.name} (HA starts it at "
                             "once)", flags)
        await self._commit(change)
        yield self._done({"uuid": uuid, "name-label": vm.name, "power-state": "halted"}
                         | ({"note": "HA starts it: it is protected"}
                            if vm.priority.protected and self._ha_on() else {}))

    async def _vm_uninstall(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        vm = self._vm(params)
        if vm.running:
            raise PoolError(f"VM {vm.name} runs on {self._name(vm.resident)}: shut it down "
                            f"first (vm-shutdown uuid={vm.uuid})")
        self._not_being_started(vm)
        await self._commit({"op": "vm-uninstall", "vm": vm.uuid})
        yield self._done(f"VM {vm.name} uninstalled")

    # ------------------------------------------------------------ power on
    async def _vm_start(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        vm = self._vm(params)
        if vm.power is Power.SUSPENDED:
            raise PoolError(f"VM {vm.name} is suspended: resume it (vm-resume uuid={vm.uuid})")
        if vm.running:
            raise PoolError(f"VM {vm.name} already runs on {self._name(vm.resident)}")
        if vm.priority.protected and self._ha_on():
            raise PoolError(f"VM {vm.name} is protected: HA starts it as soon as a live host "
                            f"has {vm.memory} MiB free (diagnostic-vm-status uuid={vm.uuid}, "
                            "message-list say why it waits)")
        async for out in self._power_on(vm, params, flags, "start"):
            yield out

    async def _vm_resume(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        vm = self._vm(params)
        if vm.power is not Power.SUSPENDED:
            raise PoolError(f"VM {vm.name} is {vm.power.value}, not suspended: nothing to "
                            "resume" + ("" if vm.running else f" (vm-start uuid={vm.uuid})"))
        async for out in self._power_on(vm, params, flags, "resume"):
            yield out

    async def _power_on(self, vm: VM, params: Mapping[str, str], flags: tuple[str, ...],
                        verb: str) -> Answer:
        self._not_being_started(vm)
        host = self._target(vm, params.get("host"))
        self._plan_holds(vm, host, f"{verb} of VM {vm.name} on {self._name(host)}", flags)
        yield {"progress": f"{verb}: {vm.name} on {self._name(host)}"}
        await self._recorded(vm, Power.RUNNING, host,
                             lambda: self.control.start_vm(vm.uuid, host))
        yield self._done(f"VM {vm.name} runs on {self._name(host)}")

    # ------------------------------------------------------------ power off
    async def _vm_shutdown(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        async for out in self._power_off(self._vm(params), Power.HALTED, "shut down"):
            yield out

    async def _vm_suspend(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        async for out in self._power_off(self._vm(params), Power.SUSPENDED, "suspended"):
            yield out

    async def _power_off(self, vm: VM, power: Power, done: str) -> Answer:
        self._db().check(power_change(vm, power, None))  # a protected VM is refused here
        if not vm.running or vm.resident is None:
            raise PoolError(f"VM {vm.name} is {vm.power.value}: it does not run")
        self._not_being_started(vm)
        host = vm.resident
        yield {"progress": f"{vm.name} on {self._name(host)}: stopping"}
        await self._recorded(vm, power, None,
                             lambda: self.control.stop_vm(vm.uuid, host, power))
        yield self._done(f"VM {vm.name} {done}" + (
            "; its state is kept on its disks until vm-resume" if power is Power.SUSPENDED
            else ""))

    # ------------------------------------------------------------ while running
    async def _vm_reboot(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        vm = self._running(params)
        assert vm.resident is not None
        self._not_being_started(vm)
        yield {"progress": f"{vm.name} on {self._name(vm.resident)}: rebooting"}
        await self.control.move(vm.uuid, vm.resident, vm.resident)
        yield self._done(f"VM {vm.name} rebooted on {self._name(vm.resident)}")

    async def _vm_migrate(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        vm = self._running(params)
        source = vm.resident
        assert source is not None
        target = self._host(params["host"])
        if target == source:
            raise PoolError(f"VM {vm.name} already runs on {self._name(source)}")
        if reasons := agility(self._pool, vm):
            raise PoolError(f"VM {vm.name} cannot move: not agile: "
                            f"{'; '.join(map(str, reasons))}")
        self._not_being_started(vm)
        self._target(vm, target)
        self._plan_holds(vm, target, f"moving VM {vm.name} to {self._name(target)}", flags)
        yield {"progress": f"{vm.name}: {self._name(source)} -> {self._name(target)} "
                           "(a cold move: stopped, then started)"}
        await self._recorded(vm, Power.RUNNING, target,
                             lambda: self.control.move(vm.uuid, source, target))
        yield self._done(f"VM {vm.name} moved to {self._name(target)}: a cold move (stopped "
                         f"on {self._name(source)}, started there); a process workload "
                         "cannot be migrated live")

    # ------------------------------------------------------------ rebalancing
    async def _pool_ha_rebalance(self, params: Mapping[str, str],
                                 flags: tuple[str, ...]) -> Answer:
        home = homes(self._db().db.pool)
        if "--dry-run" in flags:
            planned = moves(self._pool, home, self.control.live_hosts())
            yield self._done([self._move_text(m) for m in planned])
            return
        tried: set[str] = set()
        count = 0
        while (move := next_move(self._pool, home, self.control.live_hosts(),
                                 frozenset(tried))) is not None:
            tried.add(move.vm)
            if move.vm in self.control.starting():
                continue
            yield {"progress": self._move_text(move)}
            await self.control.move(move.vm, move.source, move.target)
            count += 1
        away = sorted(vm.name for vm in self._pool.vms
                      if vm.running and vm.priority in RANK and vm.uuid in home
                      and home[vm.uuid] != vm.resident)
        yield self._done(f"rebalanced: {count} VM(s) moved home" + (
            f"; away from home still: {', '.join(away)} (its home is down, disabled or full, "
            "or the move would leave the plan short)" if away else ""))

    def _move_text(self, move: Move) -> str:
        return (f"{self._pool.vm(move.vm).name}: {self._name(move.source)} -> "
                f"{self._name(move.target)} (home)")

    # ------------------------------------------------------------ helpers
    async def _recorded(self, vm: VM, power: Power, host: str | None,
                        act: Callable[[], Awaitable[None]]) -> None:
        """Record ``vm`` as ``power`` (on ``host``), then ``act`` on the host; if the
        host refuses, the record is put back as it was and the refusal raised."""
        await self._commit(power_change(vm, power, host))
        try:
            await act()
        except PoolError:
            await self._commit(power_change(vm, vm.power, vm.resident))
            raise

    def _ha_on(self) -> bool:
        return self._db().db.ha.enabled

    def _vm(self, params: Mapping[str, str]) -> VM:
        return self._pool.vm(self._vm_uuid(params))

    def _running(self, params: Mapping[str, str]) -> VM:
        vm = self._vm(params)
        if not vm.running:
            raise PoolError(f"VM {vm.name} is {vm.power.value}: it does not run")
        return vm

    def _host(self, wanted: str) -> str:
        """A host's uuid from its uuid or its name."""
        pool = self._pool
        named = [h.uuid for h in pool.hosts if wanted in (h.uuid, h.name)]
        if len(named) != 1:
            raise PoolError(f"no host {wanted!r} in the pool" if not named else
                            f"{len(named)} hosts are named {wanted!r}: give its uuid")
        return named[0]

    def _name(self, host: str | None) -> str:
        return self._pool.host(host).name if host else "no host"

    def _not_being_started(self, vm: VM) -> None:
        if vm.uuid in self.control.starting():
            raise PoolError(f"VM {vm.name} is being started by HA; try again when it runs")

    def _target(self, vm: VM, wanted: str | None) -> str:
        """Where ``vm`` may run: ``wanted`` (checked), else the plan's best fit."""
        pool = self._pool
        live = self.control.live_hosts()
        usable = [h.uuid for h in pool.hosts if h.enabled and (live is None or h.uuid in live)
                  and h.uuid != vm.resident and pool.can_host(vm, h.uuid)]
        if wanted is not None:
            host = self._host(wanted)
            if host == vm.resident:
                raise PoolError(f"VM {vm.name} already runs on {self._name(host)}")
            if not pool.can_host(vm, host):
                raise PoolError(f"host {self._name(host)} does not offer VM {vm.name}'s "
                                f"device class(es) {', '.join(vm.devices)}")
            if host not in usable:
                raise PoolError(f"host {self._name(host)} is not live and enabled")
            if pool.free_memory(host) < vm.memory:
                raise PoolError(f"host {self._name(host)} has {pool.free_memory(host)} MiB "
                                f"free; VM {vm.name} needs {vm.memory} MiB")
            return host
        if reasons := agility(pool, vm):
            raise PoolError(f"VM {vm.name} is not agile ({'; '.join(map(str, reasons))}): "
                            "name the host it runs on with host=")
        placement, _ = place_vms(pool, [vm], [(h, pool.free_memory(h)) for h in usable])
        if vm.uuid not in placement:
            largest = max((pool.free_memory(h) for h in usable), default=0)
            raise PoolError(f"no live enabled host has {vm.memory} MiB free for VM {vm.name} "
                            f"(the most free: {largest} MiB)")
        return placement[vm.uuid]

    def _plan_holds(self, vm: VM, host: str | None, what: str, flags: tuple[str, ...]) -> None:
        """Refuse ``what`` (``vm`` running on ``host``; its best fit when None) if it
        leaves the plan short, unless HA is off, the operator confirmed with
        ``--force``, or overcommit is allowed."""
        if not self._ha_on() or "--force" in flags:
            return
        where = host if host is not None else self._target(vm, None)
        after = self._pool.with_vm(replace(vm, power=Power.RUNNING, resident=where))
        if after.allow_overcommit:
            return
        tolerated = tolerance(after, self.control.live_hosts())
        configured = after.host_failures_to_tolerate
        if overcommitted(tolerated, configured):
            raise PoolError(
                f"{what} would leave a plan for {tolerated.max_failures} host failure(s), "
                f"{configured} configured ({tolerated.why}): the pool would be overcommitted. "
                "Run it again with --force to proceed (ha_pool_overcommitted is raised), "
                "or lower ha-host-failures-to-tolerate first")

    def _protects_halted(self, vm: VM, fields: Mapping[str, str]) -> bool:
        """Would ``fields`` protect ``vm`` while it is halted (so HA starts it)?"""
        return (fields.get("ha-restart-priority") == Priority.RESTART.value
                and vm.power is Power.HALTED and self._ha_on())


def power_change(vm: VM, power: Power, host: str | None) -> dict[str, Any]:
    """The pool database change recording ``vm`` as ``power`` (on ``host`` if running)."""
    change: dict[str, Any] = {"op": "vm-power", "vm": vm.uuid, "power": power.value}
    return change | ({"host": host} if host is not None else {})
