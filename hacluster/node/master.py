"""The master's duties in the daemon: keep the pool's protected VMs running.

Rules:

* Runs only while this node holds the master lock: started on MasterGained,
  cancelled on MasterLost and when the node fences or leaves.
* Every pass (each heartbeat interval, and at once after a liveset commit) it
  asks every live host's agent, over authenticated RPC, what it runs and which
  VMs exited, and feeds what changed to the restart executor
  (:mod:`hacluster.core.restarts`), whose StartVM it carries out through the
  target host's agent.
* Taking over (spec section 7): the pool view starts from the pool database, then
  what the hosts report wins. A VM reported running is running there; a VM the
  view places on a live host that answered without it has crashed; a VM on a
  host outside the liveset is on a failed host. A live host that does not
  answer keeps its VMs as they were: nothing it may run is started elsewhere.
* A start whose outcome is unknown (the RPC failed after it was sent) counts
  as finished only when that host answers a list (running there or not), or
  leaves the liveset.
* The tolerance (failures the plan covers) is recomputed whenever the pool view or the liveset
  changes, and logged (with an alert) when its answer changes. Alerts go to
  the ``alert`` callback (stored as pool messages, e-mailed).
* A change of the pool database reaches the executor as
  :class:`~hacluster.core.restarts.Reconfigure` (through :meth:`feed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hacluster.core.pool import Pool, Power
from hacluster.core.pooldb import PoolDB
from hacluster.core.recovery import overcommitted, tolerance
from hacluster.core.restarts import (
    Alert,
    ForceHalt,
    HostsFailed,
    HostsLeft,
    Pass,
    RestartAction,
    RestartConfig,
    Restarter,
    RestartInput,
    StartFinished,
    StartVM,
    VMExited,
)
from hacluster.mgmt.database import Database
from hacluster.wire import rpc

LIST_TIMEOUT = 2.0
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Guests:
    """The default VMs: guest programs with their disks in ``vm_dir`` (the shared VM SR).

    With ``lock`` a guest refuses to start on a disk another live instance
    writes; chaos runs turn it off, so the HA decisions alone keep VMs single."""

    vm_dir: Path
    lock: bool = True

    def command(self, vm: str, host: str) -> list[str]:
        return [sys.executable, "-m", "hacluster.vm.guest", "--disk",
                str(self.vm_dir / f"{vm}.disk"), "--vm", vm, "--host", host,
                *([] if self.lock else ["--no-refuse"])]


def vm_command(db: PoolDB, guests: Guests, vm: str, host: str) -> list[str]:
    """How ``vm`` runs on host ``host`` (uuid): its own command, else the guest program."""
    return list(db.commands.get(vm, ())) or guests.command(vm, db.pool.host(host).name)


@dataclass(frozen=True)
class Agents:
    """How to reach every host's agent: address per host uuid, the pool key."""

    addresses: dict[str, tuple[str, int]]
    key: bytes

    async def call(self, host: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        address, port = self.addresses[host]
        return await rpc.call(address, port, self.key, request, timeout)


class MasterDuties:
    def __init__(self, database: Database, agents: Agents, guests: Guests, interval: float,
                 log: Callable[..., None], live_hosts: Callable[[], frozenset[str]],
                 clock: Callable[[], float], alert: Callable[[str, str, str], None]) -> None:
        self.database = database
        self.alert = alert
        self.agents = agents
        self.guests = guests
        self.interval = interval
        self.log = log
        self.live_hosts = live_hosts
        self.clock = clock
        self.restarter: Restarter | None = None
        self.failed: set[str] = set()
        self.cursor: dict[str, int] = {}
        self.unsure: dict[str, str] = {}  # vm -> host whose start outcome is unknown
        self.plan: dict[str, Any] = {}
        self._plan_key: object = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ driving
    def hosts_failed(self, hosts: frozenset[str]) -> None:
        """A liveset commit removed ``hosts`` (they fenced): restart their VMs."""
        self.failed |= hosts
        self._wake.set()

    def hosts_left(self, hosts: frozenset[str]) -> None:
        """A liveset commit removed ``hosts`` that shut down cleanly: no failure."""
        self.feed(HostsLeft(self.clock(), hosts))
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                await self._pass()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
        finally:
            for task in self._tasks:
                task.cancel()

    async def _pass(self) -> None:
        live = self.live_hosts()
        reports = await self._survey(live)
        if self.restarter is None:
            self._take_over(live, reports)
        else:
            self._observe(reports)
        if self.failed:
            hosts, self.failed = frozenset(self.failed), set()
            self._feed(HostsFailed(self.clock(), hosts))
        for vm, host in list(self.unsure.items()):
            if host not in live:
                del self.unsure[vm]
                self._feed(StartFinished(self.clock(), vm, host, False, "host left the liveset"))
        self._feed(Pass(self.clock(), live))
        self._publish_plan(live)

    async def _survey(self, live: frozenset[str]) -> dict[str, dict[str, Any] | None]:
        hosts = sorted(live)
        answers = await asyncio.gather(
            *(self.agents.call(h, {"op": "list", "since": self.cursor.get(h, 0)}, LIST_TIMEOUT)
              for h in hosts), return_exceptions=True)
        return {h: a if isinstance(a, dict) and a.get("ok") else None
                for h, a in zip(hosts, answers, strict=True)}

    def _take_over(self, live: frozenset[str], reports: dict[str, dict[str, Any] | None]) -> None:
        pool = self.database.db.pool
        observed = {vm: host for host, report in reports.items() if report
                    for vm in report["running"]}
        crashed = [vm for vm in pool.vms
                   if vm.uuid not in observed and vm.resident in live and reports[vm.resident]]
        pool = pool.with_vms(replace(vm, power=Power.RUNNING, resident=observed[vm.uuid])
                             for vm in pool.vms if vm.uuid in observed)
        for host, report in reports.items():
            if report:
                self.cursor[host] = int(report["last_seq"])
        self.restarter = Restarter(pool, RestartConfig(retry_interval=max(2 * self.interval, 1)))
        self.log("master-duties", text="took over the pool", live=sorted(live),
                 running=len(observed))
        self.failed |= {vm.resident for vm in pool.vms
                        if vm.resident is not None and vm.resident not in live}
        for vm in crashed:
            assert vm.resident is not None
            self._feed(VMExited(self.clock(), vm.uuid, vm.resident, internal_shutdown=False))

    def _observe(self, reports: dict[str, dict[str, Any] | None]) -> None:
        for host, report in reports.items():
            if report is None:
                continue
            for vm, where in list(self.unsure.items()):
                if where == host:
                    del self.unsure[vm]
                    ok = vm in report["running"]
                    self._feed(StartFinished(self.clock(), vm, host, ok,
                                             "" if ok else "start outcome lost; not running"))
            for exit_ in report["exits"]:
                self.cursor[host] = max(self.cursor.get(host, 0), int(exit_["seq"]))
                if exit_["kind"] == "stopped":
                    continue
                internal = exit_["kind"] == "internal-shutdown"
                self.log("vm-exit", vm=exit_["vm"], on=host, kind=exit_["kind"],
                         returncode=exit_["returncode"])
                self._feed(VMExited(self.clock(), exit_["vm"], host, internal))

    def feed(self, event: RestartInput) -> None:
        """An input for the executor (ignored until the pass that takes over)."""
        if self.restarter is not None:
            self._feed(event)

    def _feed(self, event: RestartInput) -> None:
        assert self.restarter is not None
        for action in self.restarter.handle(event):
            self._carry_out(action)

    def _carry_out(self, action: RestartAction) -> None:
        if isinstance(action, StartVM):
            task = asyncio.create_task(self._start(action.vm, action.host))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(action, ForceHalt):
            self.log("vm-force-halted", vm=action.vm, on=action.host)
        elif isinstance(action, Alert):
            self._alert(action.name, action.obj, action.body)

    def _alert(self, name: str, obj: str, body: str) -> None:
        self.log("alert", name=name, obj=obj, body=body)
        self.alert(name, obj, body)

    async def _start(self, vm: str, host: str) -> None:
        command = vm_command(self.database.db, self.guests, vm, host)
        self.log("vm-start", vm=vm, on=host)
        try:
            answer = await self.agents.call(host, {"op": "start", "vm": vm, "command": command},
                                            START_TIMEOUT)
        except rpc.RpcError as error:
            self.log("vm-start-unsure", vm=vm, on=host, error=str(error))
            self.unsure[vm] = host
            return
        ok = bool(answer.get("ok"))
        self.log("vm-started" if ok else "vm-start-failed", vm=vm, on=host,
                 error=answer.get("error", ""))
        self._feed(StartFinished(self.clock(), vm, host, ok, str(answer.get("error", ""))))
        self._wake.set()

    # ------------------------------------------------------------ plan
    def _publish_plan(self, live: frozenset[str]) -> None:
        pool = self.pool
        key = (live, pool)  # the whole view: configuration changes count too
        if key == self._plan_key:
            return
        self._plan_key = key
        tol, configured = tolerance(pool, live), pool.host_failures_to_tolerate
        short = overcommitted(tol, configured)
        summary = {"max_failures": tol.max_failures, "exact": tol.exact,
                   "configured": configured, "overcommitted": short, "why": tol.why}
        if summary != self.plan:
            self.log("plan", **summary)
            if short and not self.plan.get("overcommitted"):
                self._alert("ha_pool_overcommitted", "pool",
                            f"no plan for {configured} host failure(s): {tol.why}")
        self.plan = summary

    @property
    def pool(self) -> Pool:
        return self.restarter.pool if self.restarter is not None else self.database.db.pool

    def status(self) -> dict[str, Any]:
        return {
            "running": {vm.uuid: vm.resident for vm in self.pool.vms if vm.resident},
            "halted": sorted(vm.uuid for vm in self.pool.vms if vm.power is Power.HALTED),
            "plan": self.plan,
            "alerts": [{"time": m.time, "name": m.name, "obj": m.obj, "body": m.body}
                       for m in self.database.db.messages[-10:]],
        }
