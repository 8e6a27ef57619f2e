"""The master's duties in the daemon: the core's :class:`Duties` bound to RPC.

Rules:

* Runs only while this node holds the master lock: started on MasterGained,
  cancelled on MasterLost and when the node fences or leaves.
* The decisions (take-over, restarts, unsure starts, hosts that do not answer,
  the plan) are the core's (:mod:`hacluster.core.duties`), the same code the
  simulator runs; this module asks, starts and logs.
* Every pass (each heartbeat interval, when a waiting restart may become
  possible: the end of an order delay, a pause or a retry interval, and at
  once after a liveset commit or a start's answer) it asks every live host's
  agent, over authenticated RPC, what it runs and which VMs exited since the
  duties' cursor. An answer that is not well formed counts as no answer (and
  is logged).
* A start whose RPC fails after it was sent is ``UNSURE``: the core waits for
  that host's next answer.
* Alerts go to the ``alert`` callback (stored as pool messages, e-mailed).
* A change of the pool database reaches the duties as
  :class:`~hacluster.core.restarts.Reconfigure` (through :meth:`feed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacluster.core.duties import (
    Duties,
    DutyInput,
    ExitRecord,
    ExitSeen,
    HostList,
    Outcome,
    Plan,
    StartAnswered,
    Surveyed,
    TookOver,
)
from hacluster.core.effects import carry_out_duties, duty_inputs
from hacluster.core.events import LivesetCommitted
from hacluster.core.pool import Pool, PoolError, Power
from hacluster.core.pooldb import PoolDB
from hacluster.core.restarts import Alert, RestartConfig, StartVM
from hacluster.mgmt.database import Database
from hacluster.node.evidence import EvidenceBook
from hacluster.node.tasks import Log, Supervisor
from hacluster.vm.driver import READY_TIMEOUT
from hacluster.vm.guest import READY_ENV
from hacluster.wire import rpc
from hacluster.wire.dial import PathMemory
from hacluster.wire.keys import KeyRing
from hacluster.wire.listener import CALLS_PER_PEER

LIST_TIMEOUT = 2.0
START_TIMEOUT = READY_TIMEOUT + 5.0  # a start answers once the VM is ready
#: seconds before the next pass when a due time is already past: one a pass does not
#: clear never spins the loop
MIN_GAP = 0.01
#: a due time nearer than this is float noise a loop may fire at once without moving
#: its clock (asyncio's clock resolution, looptime's tick): wait this long instead
TICK = 1e-6


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


def start_request(db: PoolDB, guests: Guests, vm: str, host: str) -> dict[str, Any]:
    """The agent request that starts ``vm`` on host ``host`` (uuid): its own command,
    else the guest program; a VM whose readiness is ``file`` is told where to say it
    is ready (``HACLUSTER_READY_FILE``), and the agent waits for that file; one whose
    readiness is ``command`` carries the pool file's readiness command, which the
    agent runs until it passes."""
    command = list(db.commands.get(vm, ())) or guests.command(vm, db.pool.host(host).name)
    request: dict[str, Any] = {"op": "start", "vm": vm, "command": command}
    ready = db.pool.vm(vm).ready
    if ready == "file":
        path = str(guests.vm_dir / f"{vm}.ready")
        request |= {"env": {READY_ENV: path}, "ready_file": path}
    elif ready == "command":
        request["ready_command"] = list(db.ready_commands[vm])
    return request


@dataclass(frozen=True)
class Agents:
    """How to reach every host's agent: its addresses, one per network, per host uuid
    (in HA order, as the pool file lists the hosts: a request is bound to its target
    by :func:`rpc.target`; a cut network is routed around by :func:`rpc.call_any`: the
    address on the network its heartbeats come in on is tried first, else the one that
    answered last), and
    where to read the pool's key ring (asked at every call: a rotation step takes
    effect at once). At most :data:`CALLS_PER_PEER` calls are in flight to one agent, under its
    listener's cap per peer address; the others wait their turn (their timeout starts
    when they are sent)."""

    addresses: dict[str, list[tuple[str, int]]]  # one per network, the first network first
    keys: Callable[[], KeyRing]
    heard_on: Callable[[str], str] = lambda host: ""  # the address its heartbeats come to
    paths: PathMemory = field(default_factory=PathMemory, init=False, repr=False,
                              compare=False)  # each host's address that answered last
    _turns: dict[str, asyncio.Semaphore] = field(default_factory=dict, init=False,
                                                 repr=False, compare=False)

    def target(self, host: str) -> bytes:
        return rpc.target(host)

    async def call(self, host: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if host not in self.addresses:  # recorded before the member table reached us
            raise rpc.RpcError(f"host {host} is not in the member table read here (yet)")
        turn = self._turns.setdefault(host, asyncio.Semaphore(CALLS_PER_PEER))
        async with turn:
            endpoints = self.addresses[host]
            heard = self.heard_on(host)
            first = next((e for e in endpoints if e[0] == heard), None) if heard else None
            return await rpc.call_any(endpoints, self.keys(), request, timeout,
                                      target=self.target(host), paths=self.paths, first=first)


class MasterDuties:
    def __init__(self, database: Database, agents: Agents, guests: Guests, interval: float,
                 log: Log, live_hosts: Callable[[], frozenset[str]],
                 clock: Callable[[], float], alert: Callable[[str, str, str], None],
                 evidence: EvidenceBook | None = None) -> None:
        self.database = database
        self.raise_alert = alert
        self.agents = agents
        self.guests = guests
        self.interval = interval
        self.log = log
        self.live_hosts = live_hosts
        self.clock = clock
        self.core = Duties(RestartConfig(retry_interval=max(2 * interval, 1)))
        self.plan: dict[str, Any] = {}
        self.starts: Counter[tuple[str, str]] = Counter()  # (restart priority, outcome)
        self.evidence = evidence if evidence is not None else EvidenceBook()
        self._wake = asyncio.Event()
        self._starts = Supervisor(log, lambda why: None)  # a start's end is not critical

    # ------------------------------------------------------------ driving
    def feed(self, event: DutyInput) -> None:
        """An input for the duties (the core drops what comes before the take-over)."""
        carry_out_duties(self.core.handle(event), self)
        self._wake.set()

    def committed(self, commit: LivesetCommitted, uuids: Sequence[str]) -> None:
        """A liveset commit: its failed and departed hosts, then a pass at once."""
        for event in duty_inputs(self.clock(), commit, uuids):
            self.feed(event)

    async def run(self) -> None:
        try:
            while True:
                await self._pass()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._until_next_pass())
        finally:
            self._starts.cancel_all()

    def _until_next_pass(self) -> float:
        """The interval, or less if a waiting restart may become possible sooner
        (an order delay ending: the next group starts then, not a pass later)."""
        now = self.clock()
        due = self.core.next_wake(now)
        if due is None:
            return self.interval
        ahead = due - now
        return min(self.interval, MIN_GAP if ahead <= 0 else max(ahead, TICK))

    async def _pass(self) -> None:
        live = self.live_hosts()
        answers = await self._survey(live)
        self.feed(Surveyed(self.clock(), live, answers, self.database.db.pool))

    async def _survey(self, live: frozenset[str]) -> dict[str, HostList | None]:
        hosts = sorted(live)
        answers = await asyncio.gather(
            *(self.agents.call(h, {"op": "list", "since": self.core.cursor(h)}, LIST_TIMEOUT)
              for h in hosts), return_exceptions=True)
        return {h: self._host_list(h, a) for h, a in zip(hosts, answers, strict=True)}

    def _host_list(self, host: str, answer: object) -> HostList | None:
        if not isinstance(answer, dict) or not answer.get("ok"):
            return None
        try:
            return parse_host_list(answer)
        except (KeyError, TypeError, ValueError) as error:
            self.log("master-duties", text=f"malformed list answer from {host}: {error}")
            return None

    async def _start(self, vm: str, host: str) -> None:
        request = start_request(self.database.db, self.guests, vm, host)
        self.log("vm-start", vm=vm, on=host)
        try:
            answer = await self.agents.call(host, request, START_TIMEOUT)
        except rpc.RpcError as error:
            self.log("vm-start-unsure", vm=vm, on=host, error=str(error))
            self._count_start(vm, Outcome.UNSURE)
            self.feed(StartAnswered(self.clock(), vm, host, Outcome.UNSURE, str(error)))
            return
        ok = bool(answer.get("ok"))
        self.log("vm-started" if ok else "vm-start-failed", vm=vm, on=host,
                 error=answer.get("error", ""))
        outcome = Outcome.STARTED if ok else Outcome.FAILED
        self._count_start(vm, outcome)
        self.feed(StartAnswered(self.clock(), vm, host, outcome, str(answer.get("error", ""))))

    def _count_start(self, vm: str, outcome: Outcome) -> None:
        try:
            priority = self.pool.vm(vm).priority.value or "none"
        except PoolError:
            priority = "unknown"  # it left the pool while starting
        self.starts[priority, outcome.name.lower()] += 1

    # ------------------------------------------------------------ effects.DutyEffects
    def start_vm(self, start: StartVM) -> None:
        self.evidence.restarts.append(self._restart_record(start))
        self.log("evidence", **self.evidence.restarts[-1])
        self._starts.spawn(self._start(start.vm, start.host), f"start {start.vm} on {start.host}")

    def _restart_record(self, start: StartVM) -> dict[str, Any]:
        """Why a VM starts where it does: its priority and order, where it ran, the
        host chosen and why."""
        record: dict[str, Any] = {"kind": "restart", "time": round(time.time(), 3),
                                  "vm": start.vm, "to": start.host, "why": start.why,
                                  "was_on": start.last_host}
        with contextlib.suppress(PoolError):
            entry = self.pool.vm(start.vm)
            record |= {"name": entry.name, "priority": entry.priority.value or "none",
                       "order": entry.order, "memory": entry.memory}
        return record

    def force_halted(self, vm: str, host: str) -> None:
        self.log("vm-force-halted", vm=vm, on=host)

    def alert(self, alert: Alert) -> None:
        self.log("alert", name=alert.name, obj=alert.obj, body=alert.body)
        self.raise_alert(alert.name, alert.obj, alert.body)

    def took_over(self, event: TookOver) -> None:
        self.log("master-duties", text="took over the pool", live=sorted(event.live),
                 running=event.running)

    def exit_seen(self, event: ExitSeen) -> None:
        self.log("vm-exit", vm=event.vm, on=event.host, kind=event.kind,
                 returncode=event.returncode)

    def plan_changed(self, plan: Plan) -> None:
        self.plan = plan.fields()
        self.log("plan", **self.plan)

    # ------------------------------------------------------------ status
    @property
    def pool(self) -> Pool:
        core_pool = self.core.pool
        return core_pool if core_pool is not None else self.database.db.pool

    def status(self) -> dict[str, Any]:
        return {
            "running": {vm.uuid: vm.resident for vm in self.pool.vms if vm.resident},
            "halted": sorted(vm.uuid for vm in self.pool.vms if vm.power is Power.HALTED),
            "plan": self.plan,
            "starts": [{"priority": p, "outcome": o, "count": n}
                       for (p, o), n in sorted(self.starts.items())],
            "alerts": [{"time": m.time, "name": m.name, "obj": m.obj, "body": m.body}
                       for m in self.database.db.messages[-10:]],
        }


def parse_host_list(answer: dict[str, Any]) -> HostList:
    """An agent's ``list`` answer as the core's :class:`HostList` (checked field by field)."""
    running = answer["running"]
    if not isinstance(running, dict | list) or not all(isinstance(v, str) for v in running):
        raise TypeError("running must name VMs")
    exits = []
    for record in answer["exits"]:
        seq, vm, kind, code = record["seq"], record["vm"], record["kind"], record["returncode"]
        if type(seq) is not int or not isinstance(vm, str) or not isinstance(kind, str) or (
                code is not None and type(code) is not int):
            raise TypeError(f"exit record {record!r} is not (int, str, str, int | None)")
        exits.append(ExitRecord(seq, vm, kind, code))
    last_seq = answer["last_seq"]
    if type(last_seq) is not int:
        raise TypeError("last_seq must be an int")
    return HostList(frozenset(running), tuple(exits), last_seq)
