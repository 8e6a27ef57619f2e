"""The management plane inside a node: pool database, API server, HA enable/disable.

Rules:

* Every host serves the management API (:mod:`hacluster.mgmt.api`) and keeps
  a local backup of the pool database, which the master pushes after every
  change. The backup also tells a host with HA off who the master is.
* The master is the master-lock holder while HA is on; while HA is off it is
  the host the database names (``pool-emergency-transition-to-master`` and
  ``-reset-master`` change that on one host). Only the master opens the
  database (the newest copy, :class:`~hacluster.mgmt.database.Database`); a
  node that gains the lock records itself as master before its duties start.
* Agent operations for the plane (authenticated RPC between hosts): ``ping``,
  ``ha-arm`` (generation, timeout, heartbeat SR, VMs to start), ``ha-disarm``, ``shutdown``,
  ``db-backup`` (a backup older than the one held is ignored), ``db-get``
  (a new master reads every answering host's backup along with the redo log),
  ``pending-alerts``, ``sr-probe`` (what this host finds at an SR the pool may
  move to: :func:`~hacluster.node.heartbeat_sr.describe`) and the key
  rotation's steps ``key-accept``,
  ``key-switch``, ``key-retire``, ``key-drop`` (:meth:`Plane.key_step`; the
  master's side is :mod:`hacluster.mgmt.keyrotation`).
* Alerts are stored and mailed by :mod:`hacluster.node.alerts`; a new master
  collects the alerts hosts raised without one (agent op ``pending-alerts``).
* **The heartbeat SR** the database names is where it lives
  (:meth:`Plane.use_sr` moves the master's database and lanes to another one,
  ``ha-arm`` every host's lanes). A master with HA off that loads a copy
  naming another SR it maps (the pool moved while it was away) reloads there.
* With ``other-config:ha-rebalance=auto`` the master runs
  ``pool-ha-rebalance`` itself :data:`REBALANCE_SETTLE` seconds after a
  liveset commit adds hosts (one run at a time; it is audited under the
  credential ``master:auto-rebalance``).
* A master whose database load is refused as a rollback
  (:class:`~hacluster.mgmt.database.RolledBack`: older than the SR's anchor)
  serves nothing, raises ``ha_pool_database_rolled_back`` once (kept for the
  next master, mailed) and asks the hosts' backups again every
  ``REOPEN_INTERVAL`` while it holds the lock; a load that found the log
  damaged but a newer backup raises the same alert as master.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from hacluster.core.node import HostCore
from hacluster.core.pool import Pool, PoolError, Power
from hacluster.core.pooldb import HASettings, PoolDB
from hacluster.core.restarts import Moved, Reconfigure, Stopped, VMExited
from hacluster.core.timing import Timing
from hacluster.mgmt.api import Server
from hacluster.mgmt.database import Database, RolledBack, from_snapshot
from hacluster.mgmt.roles import Credential, Role
from hacluster.mgmt.service import Service
from hacluster.mgmt.tls import CertFiles, client_context, server_context
from hacluster.mgmt.verbs import Call
from hacluster.model.pooldata import seed
from hacluster.node.alerts import Alerts
from hacluster.node.config import NodeConfig
from hacluster.node.eventlog import EventLog
from hacluster.node.evidence import EvidenceBook
from hacluster.node.heartbeat_sr import describe, prepare
from hacluster.node.margins import margins
from hacluster.node.master import Agents, Guests, MasterDuties, start_request
from hacluster.node.networks import heard_best, serve_on_other_networks
from hacluster.node.roster import Roster
from hacluster.node.sr_thread import Storage
from hacluster.node.status import SharedStatus
from hacluster.node.tasks import Supervisor
from hacluster.storage.members import MemberTable
from hacluster.storage.redolog import RecordCorrupt, load_backup, reseal_backup, save_backup
from hacluster.storage.sr import BlockDevice
from hacluster.wire import rpc
from hacluster.wire.keys import KeyRing

ASK_TIMEOUT = 5.0
ROLLBACK_ALERT = "ha_pool_database_rolled_back"
BACKUP_TIMEOUT = 1.0  # reading other hosts' backups must not delay a new master much
REOPEN_INTERVAL = 5.0  # a master that refused a rolled-back database asks again this often
BACKUP_FILE = "pooldb.backup"  # beside the status socket: the host's state directory
REBALANCE_SETTLE = 5.0  # seconds after hosts join before an automatic rebalance
AUTO_REBALANCE = Credential("master:auto-rebalance", Role.OPERATOR, "automatic rebalance")


def backup_path(config: NodeConfig) -> Path:
    """Where the host keeps its local backup of the pool database."""
    return config.status_socket.parent / BACKUP_FILE


def read_backup(path: Path, keys: KeyRing) -> PoolDB | None:
    """The host's backup of the pool database; None if absent, unreadable with ``keys``
    or malformed."""
    try:
        found = load_backup(path, keys)
        return from_snapshot(found[1]) if found else None
    except (RecordCorrupt, PoolError):
        return None


class NodeHandle(Protocol):
    """What the plane uses of its node (:class:`hacluster.node.daemon.Node`)."""

    config: NodeConfig
    log: EventLog
    storage: Storage
    roster: Roster  # who holds which index now
    tasks: Supervisor
    duties: MasterDuties | None
    keys: KeyRing  # the pool keys held now (a rotation step replaces the ring)
    evidence: EvidenceBook  # why the liveset changed and VMs started, as seen here
    timing: Timing  # the timing HA runs (or would run) with here
    shared_status: SharedStatus  # the node's status, shared by every reader

    @property
    def core(self) -> HostCore | None: ...

    def now(self) -> float: ...
    def live_hosts(self) -> frozenset[str] | None: ...
    def last_beats(self, index: int) -> list[float | None]: ...  # per network
    async def agent_request(self, request: dict[str, Any]) -> dict[str, Any]: ...
    async def arm(self, generation: int, timeout: float | None, armed: bool,
                  start: dict[str, dict[str, Any]]) -> None: ...
    def disarm(self, leaving: bool) -> None: ...
    def leave(self) -> None: ...
    def start_duties(self) -> None: ...
    async def rekey(self, keys: KeyRing) -> None: ...


class Plane:
    KEY_OPS = frozenset({"key-accept", "key-switch", "key-retire", "key-drop"})
    AGENT_OPS = frozenset({"ping", "ha-arm", "ha-disarm", "shutdown", "db-backup",
                           "db-get", "pending-alerts", "margins", "sr-probe", *KEY_OPS})

    def __init__(self, node: NodeHandle) -> None:
        assert node.config.mgmt is not None and node.config.pool is not None
        self.node = node
        self.config = node.config
        self.mgmt = node.config.mgmt
        self.index = node.config.index
        self.seed = seed(node.config.pool)
        self.me = node.config.my_uuid  # this host's uuid
        self.backup_path = backup_path(node.config)
        self.known: PoolDB = self._read_backup() or self.seed  # newest copy seen here
        self.known_master = self._index_of(self.known.master)
        self.database: Database | None = None
        self.service = Service(self)
        assert node.config.vm_dir is not None
        self.guests = Guests(node.config.vm_dir, node.config.guest_lock)
        self.agents = Agents(self._agent_addresses(node.roster), lambda: self.node.keys,
                             self._heard_on)
        self._opening: asyncio.Task[Database] | None = None
        self._push: asyncio.Task[None] | None = None
        self._rebalance: asyncio.Task[None] | None = None
        self.server: Server | None = None  # the management API, once started
        self.last_error = ""
        self.database_error = ""  # why the database did not open on the SR, until it does
        self.alerts = Alerts(node.log.write, node.tasks, lambda: self.database,
                             lambda: self.known, self.ask_all, node.config.alert_dir)

    # ------------------------------------------------------------ start
    async def start(self) -> asyncio.AbstractServer:
        server = Server(self, self.mgmt.secret,
                        server_context(CertFiles(self.mgmt.cert, self.mgmt.key), self.mgmt.ca),
                        client_context(self.mgmt.ca))
        self.server = server
        return await server.serve(self.config.address.host, self.mgmt.port)

    async def serve_other_networks(self) -> list[asyncio.AbstractServer]:
        """The management API on this host's other networks too (after :meth:`start`)."""
        assert self.server is not None
        server = self.server
        return await serve_on_other_networks(
            self.node.roster.service_hosts(self.index), self.config.address.host,
            lambda host: server.serve(host, self.mgmt.port), self.node.log.write,
            "management API")

    def started(self, generation: int, active: bool, timeout: float) -> None:
        """What the SR says at start: a pool whose HA was enabled without a
        database anywhere (a lab started armed) is seeded as HA enabled."""
        if active and not self.seed.ha.enabled:
            ha = HASettings(True, timeout, "heartbeat-sr", generation)
            if self.known is self.seed:
                self.known = replace(self.seed, ha=ha)
            self.seed = replace(self.seed, ha=ha)

    def pool_timeout(self) -> float | None:
        """T of the pool's HA enable (a host rejoining must use the pool's)."""
        return self.known.ha.timeout if self.known.ha.enabled else None

    async def ha_off(self) -> None:
        """HA is off here: the host the newest database names master opens it.

        A host that believes it is master (its own backup says so) first reads
        the newest copy: if that names another master (one made while this
        host was away), it follows that one instead."""
        if self.known_master != self.index:
            return
        try:
            database = await self._load()
        except (PoolError, OSError, ValueError) as error:
            self._not_opened(error, alert=True)
            return
        if database.db.master not in ("", self.me):
            self.known = database.db
            self.known_master = self._index_of(database.db.master)
            self.node.log.write("pooldb", text=f"following master {database.db.master}, "
                                "named by the newest database")
            database.close()
            return
        await self._take(database)

    # ------------------------------------------------------------ api.Host
    def is_master(self) -> bool:
        core = self.node.core
        if core is not None and core.armed:
            return core.is_master and self.database is not None
        return self.database is not None

    def master_endpoints(self) -> list[tuple[str, int]]:
        """The master's management API on each of its networks (none if it is us or
        unknown)."""
        core = self.node.core
        index = core.master_hint if core is not None and core.armed else self.known_master
        if index is None or index == self.index:
            return []
        return [(host, self.mgmt.port) for host in self.node.roster.service_hosts(index)]

    def answer(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        return self.service.answer(call)

    def answers_without_master(self, verb: str) -> bool:
        """pool-ha-disable in survival rule 2; pool-ha-enable (to move the pool to
        another SR) on the master whose database did not open on its SR."""
        if self.database is not None:
            return False
        if verb == "pool-ha-disable":
            return self.rule2()
        return verb == "pool-ha-enable" and self.node.core is None \
            and self.known_master == self.index and bool(self.database_error)

    def denied_credentials(self) -> frozenset[str]:
        """The deny list of the database held here, else of the newest copy pushed here."""
        return (self.known if self.database is None else self.database.db).denied

    # ------------------------------------------------------------ service.Control
    def live_hosts(self) -> frozenset[str] | None:
        return self.node.live_hosts()

    def armed(self) -> bool:
        return self.node.core is not None

    def rule2(self) -> bool:
        """Is this host armed in survival rule 2 (the heartbeat SR lost everywhere)?"""
        core = self.node.core
        return core is not None and core.armed and core.rule2

    def current_pool(self) -> Pool:
        assert self.database is not None
        duties = self.node.duties
        return duties.pool if duties is not None else self.database.db.pool

    def address(self, host_uuid: str) -> str:
        """The host's address in the pool model, else its first heartbeat address."""
        index = self._index_of(host_uuid)
        model = self.known.pool.host(host_uuid).address
        addresses = self.node.roster.addresses.get(index) if index is not None else None
        return model or (addresses[0].host if addresses else "")

    async def ask_all(self, request: dict[str, Any], hosts: list[str],
                      timeout: float = ASK_TIMEOUT) -> dict[str, dict[str, Any] | str]:
        async def ask(host: str) -> dict[str, Any] | str:
            try:
                answer = await (self.node.agent_request(request) if host == self.me
                                else self.agents.call(host, request, timeout))
            except rpc.RpcError as error:
                return str(error)
            return answer if answer.get("ok") else str(answer.get("error", "refused"))
        answers = await asyncio.gather(*(ask(h) for h in hosts))
        return dict(zip(hosts, answers, strict=True))

    async def write_generation(self, generation: int, active: bool) -> None:
        """The SR's global block; with HA enabled, the member table carried over to
        the new generation if joins or ejects changed the pool since it was created."""
        storage, roster = self.node.storage, self.node.roster

        def write(device: BlockDevice) -> None:
            storage.write_header(device, generation, active)
            if active and roster.version > 0:
                storage.write_members(device, roster.table(generation))

        ok, _, error = await storage.manage(write)
        if not ok:
            raise PoolError(f"could not write the heartbeat SR: {error}")

    def my_uuid(self) -> str:
        return self.me

    def newest_copy(self) -> PoolDB:
        return self.known

    def master_without_database(self, why: str) -> None:
        """``pool-emergency-transition-to-master`` here, the database not opened (its
        SR lost): this host answers ``pool-ha-enable`` to another SR as the master."""
        self.known_master = self.index
        self._not_opened(PoolError(why), alert=False)

    def heartbeat_sr(self) -> str:
        """The heartbeat SR this host uses now."""
        return self.node.storage.uuid

    def move_storage(self, sr: str) -> None:
        """Put this host's heartbeat SR lanes on SR ``sr`` (HA not running here)."""
        storage = self.node.storage
        if sr == storage.uuid:
            return
        if self.node.core is not None:
            raise PoolError(f"HA runs here on heartbeat SR {storage.uuid!r}: it cannot move "
                            f"to {sr!r} before it is disarmed")
        path = self.config.sr_path(sr)
        if path is None:
            raise PoolError(f"node.toml maps no path for heartbeat SR {sr!r} (add it under "
                            "[heartbeat_srs])")
        storage.move(sr, path)
        self.node.log.write("heartbeat-sr", sr=sr, path=str(path))

    async def use_sr(self, sr: str) -> None:
        """The master's move to heartbeat SR ``sr``: the database first, then its lanes.
        Holding no database (it did not open on the SR in use), it opens one there."""
        path = self.config.sr_path(sr)
        if path is None:
            raise PoolError(f"node.toml maps no path for heartbeat SR {sr!r}")
        if self.database is not None:
            await self.database.move(path)
            self.move_storage(sr)
            return
        database = await self._open_on(path)
        self.move_storage(sr)
        await self._take(database)

    async def prepare_sr(self, sr: str, generation: int) -> None:
        """Write ``generation`` to SR ``sr``, not armed yet (:func:`prepare`)."""
        await asyncio.to_thread(prepare, self.config, self.node.keys, sr, generation)

    async def member_table(self) -> MemberTable:
        """The SR's member table of the running generation, else what the roster says."""
        generation = self.known.ha.sr_generation if self.database is None \
            else self.database.db.ha.sr_generation
        storage = self.node.storage
        ok, table, error = await storage.manage(lambda device: storage.members(generation, device))
        if not ok:
            raise PoolError(f"could not read the member table: {error}")
        roster = self.node.roster
        if table is None or table.version < roster.version:
            return roster.table(generation)
        assert isinstance(table, MemberTable)
        return table

    async def write_members(self, table: MemberTable, freed: int | None) -> None:
        """Write the member table (and zero a freed index's slot first)."""
        storage = self.node.storage

        def write(device: BlockDevice) -> None:
            if freed is not None:
                storage.free_slot(device, freed)
            storage.write_members(device, table)

        ok, _, error = await storage.manage(write)
        if not ok:
            raise PoolError(f"could not write the member table: {error}")

    async def become_master(self) -> Database:
        if self.database is not None:
            return self.database
        if self._opening is None:
            self._opening = asyncio.create_task(self._open())
        try:
            return await asyncio.shield(self._opening)
        finally:
            self._opening = None

    async def _open(self) -> Database:
        return await self._take(await self._load())

    async def _load(self, followed: bool = False) -> Database:
        """The newest copy: the SR's redo log, this host's backup, other hosts' backups."""
        storage = self.node.storage
        database = await self._open_on(storage.path)
        named = database.db.ha.sr
        if named != storage.uuid and not followed and self.node.core is None \
                and self.config.sr_path(named):
            # HA off, and a newer copy says the pool moved to another SR while this
            # host was away: keep the database there
            database.close()
            self.move_storage(named)
            return await self._load(followed=True)
        return database

    async def _open_on(self, sr: Path) -> Database:
        """The newest copy among the redo log of the SR at ``sr`` and the backups."""
        live = self.node.live_hosts()  # with HA on, the dead are out of it already
        others = sorted((live if live is not None else {h.uuid for h in self.seed.pool.hosts})
                        - {self.me})
        answers = await self.ask_all({"op": "db-get"}, others, timeout=BACKUP_TIMEOUT)
        copies = [(f"the backup of {host}", bytes(answer["payload"]))
                  for host, answer in answers.items()
                  if isinstance(answer, dict) and answer.get("payload")]
        database = await Database.open(sr, self.backup_path, self.node.keys, self.seed, copies)
        for note in database.notes:
            self.node.log.write("pooldb", text=note)
        return database

    async def _take(self, database: Database) -> Database:
        """Hold ``database`` as this host's, recorded as master."""
        self.database = database
        self.database_error = ""
        database.listeners.append(self._changed)
        if database.db.master != self.me:
            await database.commit({"op": "master", "host": self.me})
        self._changed(database.db)
        for warning in database.warnings:  # the redo log was found damaged or rolled back
            self.alert(ROLLBACK_ALERT, self.me, warning)
        return database

    def _not_opened(self, error: Exception, alert: bool) -> None:
        """The database could not be opened; a refused rollback is also an alert (once).
        Any other error lets this host, if master, move the pool to another SR."""
        text = f"could not open the pool database: {error}"
        self.node.log.write("pooldb", text=text)
        self.last_error = text
        self.database_error = "" if isinstance(error, RolledBack) else text
        if alert and isinstance(error, RolledBack):
            self.local_alert(ROLLBACK_ALERT, self.me, str(error))

    def reset_master(self, address: str) -> str:
        roster = self.node.roster
        for index, addresses in sorted(roster.addresses.items()):
            if any(a.host == address for a in addresses):
                self.known_master = index
                if index != self.index:
                    self._close_database()
                return f"this host now follows the master at {address} (host {index})"
        raise PoolError(f"no host of this pool has address {address!r}; known: "
                        f"{[a[0].host for _, a in sorted(roster.addresses.items())]}")

    async def emergency_disarm(self) -> None:
        if self.node.core is None:
            raise PoolError("HA is not armed on this host")
        self.node.log.write("emergency-ha-disable", text="HA disarmed by the operator")
        self.node.disarm(leaving=False)

    async def move(self, vm: str, source: str, target: str) -> None:
        """Stop ``vm`` on ``source``, start it on ``target``; tell the restart executor."""
        assert self.database is not None
        request = start_request(self.database.db, self.guests, vm, target)
        stopped = await self._ask(source, {"op": "stop", "vm": vm})
        if isinstance(stopped, str):
            raise PoolError(f"VM {vm} could not be stopped on {source}: {stopped}; "
                            "nothing was moved")
        started = await self._ask(target, request)
        duties = self.node.duties
        now = self.node.now()
        if isinstance(started, str):
            if duties is not None:  # stopped and not started: HA treats it as a crash
                duties.feed(VMExited(now, vm, source, internal_shutdown=False))
            raise PoolError(f"VM {vm} stopped on {source} but did not start on {target}: "
                            f"{started}" + ("; HA restarts it if it is protected"
                                            if duties is not None else ""))
        if duties is not None:
            duties.feed(Moved(now, vm, target))

    async def start_vm(self, vm: str, host: str) -> None:
        """The operator's start: the restart executor learns it first (so it never
        starts the VM elsewhere meanwhile), then the host starts it."""
        assert self.database is not None
        request = start_request(self.database.db, self.guests, vm, host)
        duties = self.node.duties
        if duties is not None:
            duties.feed(Moved(self.node.now(), vm, host))
        started = await self._ask(host, request)
        if isinstance(started, str):
            if duties is not None:
                duties.feed(Stopped(self.node.now(), vm, Power.HALTED))
            raise PoolError(f"VM {vm} did not start on {host}: {started}")

    async def stop_vm(self, vm: str, host: str, power: Power) -> None:
        """The operator's shutdown or suspend: the host stops it, then the restart
        executor learns it was on purpose."""
        stopped = await self._ask(host, {"op": "stop", "vm": vm})
        if isinstance(stopped, str):
            raise PoolError(f"VM {vm} could not be stopped on {host}: {stopped}")
        duties = self.node.duties
        if duties is not None:
            duties.feed(Stopped(self.node.now(), vm, power))

    def starting(self) -> dict[str, str]:
        duties = self.node.duties
        restarter = duties.core.restarter if duties is not None else None
        return restarter.starting if restarter is not None else {}

    async def _ask(self, host: str, request: dict[str, Any]) -> dict[str, Any] | str:
        return (await self.ask_all(request, [host]))[host]

    # ------------------------------------------------------------ rebalancing
    def hosts_returned(self) -> None:
        """Hosts joined the liveset: rebalance soon, if the pool asks for it."""
        if self.database is None or self.database.db.other_config.get("ha-rebalance") != "auto":
            return
        if self._rebalance is None or self._rebalance.done():
            self._rebalance = self.node.tasks.spawn(self._auto_rebalance(), "auto rebalance")

    async def _auto_rebalance(self) -> None:
        await asyncio.sleep(REBALANCE_SETTLE)  # the hosts' agents answer, restarts settle
        call = Call("pool-ha-rebalance", caller=AUTO_REBALANCE)
        try:
            async for out in self.service.answer(call):
                self.node.log.write("rebalance", **out)
        except (PoolError, rpc.RpcError) as error:
            self.node.log.write("rebalance", ok=False, error=str(error))

    # ------------------------------------------------------------ master role
    def master_gained(self) -> None:
        self.node.tasks.spawn(self._take_office(), "take office")

    async def _take_office(self) -> None:
        """Open the database; one that would roll the pool back is refused, raised
        as an alert, and asked for again (the hosts' backups) until it loads."""
        refusals = 0
        while True:
            try:
                await self.become_master()
                break
            except RolledBack as error:
                self._not_opened(error, alert=refusals == 0)
                refusals += 1
            except (PoolError, OSError, ValueError) as error:
                self._not_opened(error, alert=False)
                return
            await asyncio.sleep(REOPEN_INTERVAL)
            core = self.node.core
            if core is not None and not core.is_master:
                return  # the lock moved on: the next master loads it
        self.last_error = ""
        core = self.node.core
        if core is not None and core.is_master:
            self.node.start_duties()
        hosts = sorted(self._live_uuids() or {h.uuid for h in self.seed.pool.hosts})
        await self.alerts.collect(hosts)

    def master_lost(self) -> None:
        self._close_database()

    def _close_database(self) -> None:
        if self.database is not None:
            self.database.close()
            self.database = None

    def duties(self, interval: float) -> MasterDuties:
        assert self.database is not None
        return MasterDuties(self.database, self.agents, self.guests, interval,
                            self.node.log.write, self._live_uuids, self.node.now,
                            self.alert, self.node.evidence)

    def _live_uuids(self) -> frozenset[str]:
        return self.node.live_hosts() or frozenset()

    def _changed(self, db: PoolDB) -> None:
        """A committed change: remember it, feed the executor, push the backups."""
        self.known = db
        self.known_master = self._index_of(db.master)
        duties = self.node.duties
        if duties is not None:
            duties.feed(Reconfigure(self.node.now(), db.pool))
        if self._push is None or self._push.done():
            self._push = self.node.tasks.spawn(self._push_backups(), "push backups")

    async def _push_backups(self) -> None:
        """Push the newest database to every other host's backup; a change committed
        while a push is in flight is pushed right after it, so the last push always
        carries the newest generation."""
        pushed = None
        while True:
            await asyncio.sleep(0)  # coalesce a burst of changes
            database = self.database
            if database is None:
                return  # no longer master: the next one pushes
            db = database.db
            if db.generation == pushed:
                return
            others = sorted(h.uuid for h in db.pool.hosts if h.uuid != self.me)
            request = {"op": "db-backup", "generation": db.generation,
                       "payload": database.snapshot}
            answers = await self.ask_all(request, others)
            failed = sorted(h for h, a in answers.items() if isinstance(a, str))
            if failed and db is database.db:
                self.last_error = f"backup not pushed to {failed}"
            pushed = db.generation

    # ------------------------------------------------------------ alerts
    def alert(self, name: str, obj: str, body: str) -> None:
        self.alerts.alert(name, obj, body)

    def local_alert(self, name: str, obj: str, body: str) -> None:
        self.alerts.local_alert(name, obj, body)

    @property
    def pending(self) -> list[dict[str, Any]]:
        return self.alerts.pending

    # ------------------------------------------------------------ agent operations
    async def agent_request(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            if op == "ping":
                return {"ok": True, "armed": self.node.core is not None}
            if op == "ha-arm":
                return await self._arm(request)
            if op == "ha-disarm":
                self.node.disarm(leaving=False)
                return {"ok": True}
            if op == "shutdown":
                asyncio.get_running_loop().call_later(0.2, self.node.leave)
                return {"ok": True}
            if op == "db-backup":
                return await self._backup(request)
            if op == "db-get":
                found = await asyncio.to_thread(load_backup, self.backup_path, self.node.keys)
                return {"ok": True, "payload": found[1] if found else b""}
            if op == "pending-alerts":
                return {"ok": True, "alerts": self.alerts.hand_over()}
            if op == "margins":
                return await self._margins(request)
            if op == "sr-probe":
                seen = await asyncio.to_thread(describe, self.config, self.node.keys,
                                               str(request["sr"]))
                return {"ok": True, "current_direct": self.node.storage.direct, **seen}
            if op in self.KEY_OPS:
                return await self.key_step(str(op), bytes(request["key"]))
        except (PoolError, RuntimeError, ValueError, TypeError, KeyError, OSError) as error:
            return {"ok": False, "error": str(error)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _margins(self, request: dict[str, Any]) -> dict[str, Any]:
        """This host's margins, under its timing or the one of ``timeout`` if given."""
        timing = self.node.timing
        if request.get("timeout") is not None:
            timing = Timing.derive(float(request["timeout"]))  # TimingError is a ValueError
        status = await self.node.shared_status()
        return {"ok": True, "timeout": timing.T, "phase": status.get("phase"),
                "rows": margins(status, timing)}

    async def _arm(self, request: dict[str, Any]) -> dict[str, Any]:
        generation = int(request["generation"])
        self.move_storage(str(request.get("sr") or self.heartbeat_sr()))
        storage = self.node.storage
        ok, header, error = await storage.manage(storage.header)
        if not ok:
            raise PoolError(f"could not read the heartbeat SR: {error}")
        if header.generation != generation:
            raise PoolError(f"the heartbeat SR holds generation {header.generation}, "
                            f"not {generation}: HA enable raced with another")
        await self.node.arm(generation, float(request["timeout"]), True, self.resident_vms())
        return {"ok": True}

    def resident_vms(self) -> dict[str, dict[str, Any]]:
        """The VMs the database places on this host, each with its start request."""
        db = self.known if self.database is None else self.database.db
        return {vm.uuid: start_request(db, self.guests, vm.uuid, self.me)
                for vm in db.pool.resident_on(self.me)}

    async def _backup(self, request: dict[str, Any]) -> dict[str, Any]:
        generation, payload = int(request["generation"]), bytes(request["payload"])
        if generation <= self.known.generation and self.backup_path.exists():
            return {"ok": True, "kept": self.known.generation}
        db = from_snapshot(payload)
        await asyncio.to_thread(save_backup, self.backup_path, generation, payload,
                                self.node.keys)
        self.known = db
        if self.node.core is None:
            self.known_master = self._index_of(db.master)
        return {"ok": True, "kept": generation}

    async def key_step(self, op: str, key: bytes) -> dict[str, Any]:
        """One step of a key rotation on this host: the ring, its files, the loops;
        on a switch or retire, this host's backup saved again under the current key
        first, and on the master the database's keys (rewritten on the switch)."""
        keys = self.node.keys
        if op == "key-accept":
            await self.node.rekey(keys.accepting(key))
        elif op == "key-drop":  # also when this host's own accept was cut short
            if keys.previous is None and keys.next in (key, None):
                await self.node.rekey(keys.alone())
        elif op == "key-switch":
            keys = keys.switched(key)
        elif keys.current != key:
            raise PoolError("this host does not seal with that key: it cannot retire the other")
        if op in ("key-switch", "key-retire"):
            await asyncio.to_thread(reseal_backup, self.backup_path, keys)
            keys = keys.alone() if op == "key-retire" else keys
            await self.node.rekey(keys)
            if self.database is not None:
                await self.database.rekey(keys, rewrite=op == "key-switch")
        return {"ok": True, "keys": len(self.node.keys.keys)}

    def key_ring(self) -> KeyRing:
        return self.node.keys

    # ------------------------------------------------------------ helpers
    def _read_backup(self) -> PoolDB | None:
        return read_backup(self.backup_path, self.node.keys)

    def _index_of(self, host_uuid: str) -> int | None:
        return self.node.roster.index_of(host_uuid)

    def _agent_addresses(self, roster: Roster) -> dict[str, list[tuple[str, int]]]:
        """Every host's agent on each of its networks, the first network first."""
        return {roster.uuids[i]: [(host, self.config.agent_port)
                                  for host in roster.service_hosts(i)]
                for i in sorted(roster.addresses)}

    def _heard_on(self, host_uuid: str) -> str:
        """The address of ``host_uuid`` on the network its heartbeats come in on now
        (:func:`~hacluster.node.networks.heard_best`), else ""."""
        index = self._index_of(host_uuid)
        addresses = self.node.roster.addresses.get(index, ()) if index is not None else ()
        network = heard_best(self.node.last_beats(index), self.node.timing.t1) \
            if index is not None and len(addresses) > 1 else None
        return addresses[network].host if network is not None else ""

    def members_changed(self, roster: Roster) -> None:
        """A join or an eject: reach the new hosts' agents, forget the departed."""
        addresses = self._agent_addresses(roster)  # in place: the duties hold these agents
        self.agents.addresses.clear()
        self.agents.addresses.update(addresses)

    def ha_mode(self) -> str:
        return self.config.mode.value

    def evidence(self) -> dict[str, Any]:
        roster = self.node.roster
        return {"names": {str(i): name for i, name in roster.names.items()},
                "uuids": {roster.uuids[i]: name for i, name in roster.names.items()
                          if i in roster.uuids},
                "records": self.node.evidence.records()}

    def status(self) -> dict[str, Any]:
        return {"mgmt": {"master_known": self.known_master, "generation": self.known.generation,
                         "database_open": self.database is not None,
                         "ha_enabled": self.known.ha.enabled, "last_error": self.last_error,
                         **({"api": self.server.counts(), "calls": self.server.call_counts()}
                            if self.server is not None else {})}}
