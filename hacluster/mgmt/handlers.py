"""What every management verb handler shares: the daemon's face, commits, answers.

Rules:

* A handler is an async generator ``_verb_name(params, flags)`` yielding
  ``{"progress": text}`` while it works and one final answer
  (:meth:`Handlers._done`), or raising :class:`~hacluster.core.pool.PoolError`
  with what to do; the daemon is reached only through :class:`Control`.
* Changes go through :meth:`Handlers._commit`: the first commit of a call
  carries its audit record (:data:`pending_audit`), so a change is never in
  force without it.
* What runs where is the master's live view (:meth:`Control.current_pool`),
  not the database's record: verbs that ask "is it running, where, would the
  plan hold" read :attr:`Handlers._pool`.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from hacluster.core.pool import Pool, PoolError, Power
from hacluster.core.pooldb import PoolDB
from hacluster.mgmt.database import Database
from hacluster.storage.members import MemberTable
from hacluster.wire.keys import KeyRing

Answer = AsyncIterator[dict[str, Any]]
# the audit record of the call being answered, until a commit carries it; each
# connection is its own task, hence its own context
pending_audit: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "pending_audit", default=None)


class Control(Protocol):
    """What the verbs need from the daemon."""

    index: int
    database: Database | None  # open on the master only
    database_error: str  # why the database did not open here, if it did not

    def live_hosts(self) -> frozenset[str] | None: ...  # None while HA is off
    def armed(self) -> bool: ...
    def rule2(self) -> bool: ...  # armed in survival rule 2: the heartbeat SR lost everywhere
    async def ask_all(self, request: dict[str, Any],
                      hosts: list[str]) -> dict[str, dict[str, Any] | str]: ...
    async def write_generation(self, generation: int, active: bool) -> None: ...
    def newest_copy(self) -> PoolDB: ...  # the newest database copy this host has seen
    def master_without_database(self, why: str) -> None: ...  # the emergency master's SR lost
    def heartbeat_sr(self) -> str: ...  # the heartbeat SR this host uses now
    async def prepare_sr(self, sr: str, generation: int) -> None: ...  # format, unused yet
    async def use_sr(self, sr: str) -> None: ...  # the master's database and lanes move
    async def become_master(self) -> Database: ...
    def reset_master(self, address: str) -> str: ...
    async def emergency_disarm(self) -> None: ...
    async def move(self, vm: str, source: str, target: str) -> None: ...
    async def start_vm(self, vm: str, host: str) -> None: ...  # the operator's start
    async def stop_vm(self, vm: str, host: str, power: Power) -> None: ...  # halt, suspend
    def starting(self) -> Mapping[str, str]: ...  # VMs HA is starting now, with their host
    def current_pool(self) -> Pool: ...  # the database's, with what runs where
    async def member_table(self) -> MemberTable: ...  # the pool's members now
    async def write_members(self, table: MemberTable, freed: int | None) -> None: ...
    def my_uuid(self) -> str: ...
    def address(self, host_uuid: str) -> str: ...
    def key_ring(self) -> KeyRing: ...  # the pool keys this host holds
    def evidence(self) -> dict[str, Any]: ...  # names by index and uuid; evidence records
    def ha_mode(self) -> str: ...  # statefile or clustered


class Handlers:
    def __init__(self, control: Control, clock: Callable[[], float] = time.time) -> None:
        self.control = control
        self.clock = clock

    def _db(self) -> Database:
        database = self.control.database
        if database is None:
            raise PoolError("this host holds no pool database (it is not the master)")
        return database

    @property
    def _pool(self) -> Pool:
        """The database's pool with what runs where as the master knows it."""
        return self.control.current_pool()

    def _vm_uuid(self, params: Mapping[str, str]) -> str:
        """The VM ``uuid=`` names: its uuid, or a name-label no other VM has."""
        pool = self._db().db.pool
        wanted = params["uuid"]
        named = [vm.uuid for vm in pool.vms if vm.name == wanted]
        if any(vm.uuid == wanted for vm in pool.vms) or len(named) != 1:
            if len(named) > 1:
                raise PoolError(f"{len(named)} VMs are named {wanted!r}: give its uuid")
            return pool.vm(wanted).uuid
        return named[0]

    def _host_uuid(self, params: Mapping[str, str]) -> str:
        return self._db().db.pool.host(params["uuid"]).uuid

    async def _commit(self, change: dict[str, Any], database: Database | None = None) -> PoolDB:
        """Commit ``change``; the first commit of a call carries its audit record."""
        record = pending_audit.get()
        db = await (database or self._db()).commit(
            change if record is None else {**change, "audit": record}, self.control.live_hosts())
        pending_audit.set(None)
        return db

    @staticmethod
    def _done(result: Any = None) -> dict[str, Any]:
        return {"ok": True, "result": result}
