"""Fakes at the edges of the daemon's asyncio side, for in-process tests in loop time.

The code under test is real (:class:`MasterDuties`, :class:`Plane`,
:class:`Service`, :class:`Database` on a real SR file); only what it reaches
beyond the process is faked: the agents of the other hosts (a scripted RPC
:class:`Network` of :class:`FakeAgent`), the node around the plane and the
event log. The tests run under the ``looptime`` plugin, so a timeout of
fifteen seconds passes in microseconds, and every time they assert on is
the event loop's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacluster.core.pooldb import PoolDB
from hacluster.lab.workloads import default_pool, host_uuid
from hacluster.mgmt.database import Database
from hacluster.model.pooldata import seed
from hacluster.node.eventlog import EventLog
from hacluster.node.master import Agents
from hacluster.node.tasks import Supervisor
from hacluster.storage.sr import BLOCK, format_sr
from hacluster.wire.codec import new_pool_key
from hacluster.wire.keys import KeyRing
from hacluster.wire.rpc import RpcError

KEY = new_pool_key()
HOSTS = 3
UUIDS = [host_uuid(i) for i in range(HOSTS)]
#: where :func:`hacluster.lab.workloads.default_pool` places its VMs
PLACEMENT = {"vm-dhcp": UUIDS[0], "vm-sql": UUIDS[0], "vm-batch": UUIDS[0],
             "vm-scratch": UUIDS[0], "vm-web1": UUIDS[1], "vm-web2": UUIDS[2]}

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def now() -> float:
    return asyncio.get_running_loop().time()


def start() -> PoolDB:
    """The default lab pool's first database (three hosts, six VMs)."""
    return seed(default_pool(HOSTS))


def make_sr(directory: Path) -> Path:
    """A heartbeat SR file for three hosts, generation 1, with a small metadata region."""
    path = directory / "heartbeat.sr"
    format_sr(path, HOSTS, KEY, 1, metadata=BLOCK * 64)
    return path


async def open_database(directory: Path, db: PoolDB | None = None) -> Database:
    """The master's database on a fresh SR file in ``directory`` (seeded with ``db``)."""
    return await Database.open(make_sr(directory), directory / "master.backup", KEY,
                               db if db is not None else start())


async def settle(tasks: Supervisor) -> None:
    """Until every task the supervisor holds has ended (tasks may spawn tasks)."""
    while tasks.tasks:
        await asyncio.wait(set(tasks.tasks))


class Records(EventLog):
    """The node's event log, kept in memory: ``(event, fields)`` in order."""

    def __init__(self) -> None:  # no file: nothing of EventLog's own state is used
        self.host = 0
        self.records: list[tuple[str, dict[str, Any]]] = []

    def write(self, event: str, sync: bool = False, **fields: Any) -> None:
        self.records.append((event, fields))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.records if event == name]

    def names(self) -> list[str]:
        return [event for event, _ in self.records]


@dataclass
class FakeAgent:
    """One host's agent as the master reaches it: what it runs, the exits it keeps.

    ``list`` answers as the real agent does (exits above ``since``) unless
    ``list_answer`` replaces the answer; ``start`` starts the VM after
    ``start_takes`` seconds of loop time, or refuses with ``refuse``; any
    other op answers from ``answers`` (default ``{"ok": True}``)."""

    running: set[str] = field(default_factory=set)
    exits: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    list_answer: Any = None
    start_takes: float = 0.0
    refuse: str = ""
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancelled: list[dict[str, Any]] = field(default_factory=list)  # requests cut short

    def crash(self, vm: str, kind: str = "crash", returncode: int | None = -9) -> None:
        self.running.discard(vm)
        self.last_seq += 1
        self.exits.append({"seq": self.last_seq, "vm": vm, "kind": kind,
                           "returncode": returncode})

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._answer(request)
        except asyncio.CancelledError:
            self.cancelled.append(request)
            raise

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "list":
            if self.list_answer is not None:
                answer: dict[str, Any] = self.list_answer
                return answer
            return {"ok": True, "running": {vm: 1000 + n for n, vm in
                                            enumerate(sorted(self.running))},
                    "exits": [e for e in self.exits if e["seq"] > request["since"]],
                    "last_seq": self.last_seq}
        if op == "start":
            await asyncio.sleep(self.start_takes)
            if self.refuse:
                return {"ok": False, "error": self.refuse}
            self.running.add(request["vm"])
            return {"ok": True, "pid": 4242}
        return self.answers.get(op, {"ok": True})


@dataclass(frozen=True)
class Fault:
    """What the network does to the next request of ``op`` (to any host).

    ``drop``: it never arrives (RpcError at once); ``lose-answer``: it
    arrives and is carried out, its answer is lost (RpcError); ``hang``: no
    answer comes (RpcError when the caller's timeout runs out)."""

    op: str
    kind: str


@dataclass(frozen=True)
class Network(Agents):
    """:class:`Agents` over a scripted network: host uuid -> its handler.

    A host without a handler refuses connections; ``faults`` are consumed by
    the first request they match. Every request is kept in ``sent`` with the
    loop time it was sent at; timeouts are the caller's, as ``rpc.call``'s."""

    hosts: dict[str, Handler] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    sent: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    async def call(self, host: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.sent.append((now(), host, request))
        fault = next((f for f in self.faults if f.op == request.get("op")), None)
        if fault is not None:
            self.faults.remove(fault)
        handler = self.hosts.get(host)
        if handler is None or (fault is not None and fault.kind == "drop"):
            raise RpcError(f"{host}: connection refused (no agent listening?)")
        try:
            async with asyncio.timeout(timeout):
                if fault is not None and fault.kind == "hang":
                    await asyncio.Event().wait()
                answer = await handler(request)
        except TimeoutError:
            raise RpcError(f"{host}: no answer within {timeout} s") from None
        if fault is not None and fault.kind == "lose-answer":
            raise RpcError(f"{host}: closed without answering")
        return answer

    def requests(self, op: str) -> list[tuple[float, str, dict[str, Any]]]:
        return [(t, host, r) for t, host, r in self.sent if r.get("op") == op]


def network(hosts: Mapping[str, Handler]) -> Network:
    return Network({}, lambda: KeyRing(KEY), hosts=dict(hosts))
