"""The node daemon: the rest of the node around its liveness loop.

Rules:

* The liveness path (the core, heartbeats, slot I/O, watchdog pets) runs on a
  thread and event loop of its own (:mod:`hacluster.node.liveness`); this
  module's main loop runs everything else: the management plane, the master's
  duties, the host agent's RPC and the status socket. However busy or stuck
  the main loop gets, the liveness loop keeps its deadlines.
* Fencing does not depend on either loop: a separate watchdog process kills
  the node's process group when pets stop. On a fence decided by the core the
  reason is logged synchronously, the last words (a FENCED report) are written
  with a short deadline, and the daemon exits with :data:`FENCED_EXIT`.
* Under systemd (``NOTIFY_SOCKET``, :mod:`hacluster.node.systemd`) it sends
  ``READY=1`` once it serves (HA armed, joining or off), ``STOPPING=1`` when
  it leaves cleanly, and warns when ``WatchdogSec=`` is shorter than its
  timing honours; the liveness loop pets ``WatchdogSec=`` and sends
  ``STATUS=``. A watchdog device that cannot fence as configured stops the
  start with exit status 1 and a message saying why.
* The pool keys (a :class:`~hacluster.wire.keys.KeyRing`) are the node's:
  :meth:`Node.rekey` takes a key rotation step here, in this order: the key
  files (so a restart keeps the step), the liveness loop's sealers (awaited
  on the main loop, never blocking the liveness loop), then :attr:`Node.keys`,
  which the host RPC listener and the plane read at every use.
* ``SIGTERM`` is a clean shutdown: the host announces itself excluded first.
* **The heartbeat SR** is the one the pool database names (this host's backup
  of it), unless the pool moved while this host was away
  (:mod:`hacluster.node.heartbeat_sr`); the start's log line says which.
* **Members.** At start the SR's member table of the running generation, if
  any, gives the roster (:mod:`hacluster.node.roster`); a host the table does
  not list (it was ejected, or has not joined yet) does not start: it says so
  and exits with :data:`NOT_A_MEMBER_EXIT`. A newer table read later replaces
  the roster on both loops.
* A Unix socket answers every connection with the node's status as JSON
  (:mod:`hacluster.node.status`); the liveness part is a snapshot taken on the
  liveness loop.
* With ``http_port`` the node serves health, status, metrics and the status
  page (:mod:`hacluster.node.web`) on this loop. The status socket and the
  HTTP face share one :class:`~hacluster.node.status.SharedStatus`, so
  readers never make the liveness loop snapshot more than once per
  :data:`~hacluster.node.status.STATUS_TTL`; a probe measures this loop's
  own lag for the metrics.
* Every task runs under a :class:`~hacluster.node.tasks.Supervisor`; the
  storage worker and the master's duties are critical: if either ends
  unexpectedly while HA is armed, the node fences.
* With a pool file, the node runs VMs (the process driver) and answers the
  master over authenticated RPC (its agent); it refuses to start a VM unless
  armed (or HA is off in the whole pool). A fence kills every VM before the
  last words; so does leaving. While master, it runs the master's duties
  (:mod:`hacluster.node.master`).
* With the management plane configured (:mod:`hacluster.node.plane`), HA
  runs only while the SR says the pool is active: otherwise the node starts
  with HA off until ``pool-ha-enable`` arms it. Armed (at start or by the
  enable), it first starts the VMs the pool database places on it. A
  disarm (``pool-ha-disable``, the emergency disable) returns it to HA off
  with its VMs running; only leaving ends the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from hacluster.core.duties import pass_interval
from hacluster.core.events import LivesetCommitted
from hacluster.core.node import HostCore
from hacluster.core.pooldb import DEFAULT_HEARTBEAT_SR
from hacluster.core.timing import Timing
from hacluster.mgmt.roles import Credential, Role
from hacluster.mgmt.tls import CertFiles, server_context
from hacluster.node.agent import Agent
from hacluster.node.config import HttpFace, NodeConfig
from hacluster.node.eventlog import EventLog
from hacluster.node.evidence import EvidenceBook, evidence_record
from hacluster.node.heartbeat_sr import start_sr
from hacluster.node.journal import Level, say
from hacluster.node.keyfiles import store_ring
from hacluster.node.liveness import FENCED_EXIT, Liveness, handle_or_fence
from hacluster.node.margins import MarginAlerts, margins
from hacluster.node.master import MasterDuties
from hacluster.node.measure import LoopLag, Samples
from hacluster.node.networks import serve_on_other_networks
from hacluster.node.plane import Plane, backup_path, read_backup
from hacluster.node.roster import Roster
from hacluster.node.sr_thread import Storage
from hacluster.node.status import SharedStatus, query_status, serve_status
from hacluster.node.systemd import Notifier, watchdog_sec_problem
from hacluster.node.tasks import Supervisor
from hacluster.node.watchdog_client import WatchdogClient
from hacluster.node.watchdog_device import WatchdogDeviceError
from hacluster.node.web import Guard, WebFace
from hacluster.storage.members import MembersError
from hacluster.storage.sr import GlobalBlock, PoolState, SRError
from hacluster.vm.driver import ProcessDriver
from hacluster.wire import rpc
from hacluster.wire.keys import KeyRing
from hacluster.wire.listener import Listener

__all__ = ["FENCED_EXIT", "NOT_A_MEMBER_EXIT", "Node", "handle_or_fence", "next_boot",
           "query_status", "serve"]

NOT_A_MEMBER_EXIT = 78  # EX_CONFIG: the SR's member table does not list this host

#: who the status page is to the management API (a relayed read of the pool's status)
PAGE_READER = Credential("http:status-page", Role.READ_ONLY, "status page")
MARGIN_CHECK = 10.0  # seconds between two looks at this node's margins
STATUS_WAIT = 2.0  # the status socket's wait for the liveness loop's snapshot
DEVICE_SETTLE = 2.0  # an exiting daemon's wait for its watchdog device's magic close


class Node:
    """One host's daemon: HA on and off, workloads, and the liveness loop's news."""

    def __init__(self, config: NodeConfig, armed: bool, boot: int) -> None:
        self.config = config
        self.armed_at_start = armed
        self.boot = boot
        self.log = EventLog(config.log, config.index)
        self.keys = config.keys
        sr, path = start_sr(config, self.keys, self._named_sr())
        self.storage = Storage(config, self.keys, sr, path)
        self.loop = asyncio.get_running_loop()
        self.tasks = Supervisor(self.log.write, self._critical_exit)
        self.exit_code: asyncio.Future[int] = self.loop.create_future()
        self.timing = config.timing
        self.leaving = False  # HA disarmed ends the daemon (else: back to HA off)
        self.systemd = Notifier.from_environment()
        self.watchdog = WatchdogClient(self.systemd, config.watchdog_device)
        self.pool_file = config.pool
        self.driver = ProcessDriver()
        self.agent = Agent(self.driver)
        self.liveness = Liveness(config, boot, self.log, self.storage, self.watchdog,
                                 self.driver.kill_all)
        self.roster: Roster = self.liveness.roster
        self.duties: MasterDuties | None = None
        self._duties_task: asyncio.Task[None] | None = None
        self.plane = Plane(self) if config.mgmt is not None and config.pool is not None \
            else None
        self.evidence = EvidenceBook()
        self.shared_status = SharedStatus(self.status, self.now)
        self.main_lag = LoopLag()
        self.web: WebFace | None = None

    def _named_sr(self) -> str:
        """The heartbeat SR this host's database backup names (a pool without the
        management plane, or a host without a backup: the default)."""
        config = self.config
        known = read_backup(backup_path(config), self.keys) \
            if config.mgmt is not None and config.pool is not None else None
        return known.ha.sr if known is not None else DEFAULT_HEARTBEAT_SR

    @property
    def core(self) -> HostCore | None:
        """The liveness core (owned by the liveness loop: read its plain fields only)."""
        return self.liveness.core

    def now(self) -> float:
        return self.loop.time()

    async def run(self) -> int:
        config = self.config
        header = self._read_header()
        self.log.write("start", boot=self.boot, sr=self.storage.uuid,
                       sr_path=str(self.storage.path), generation=header.generation,
                       state=header.state.name, armed=self.armed_at_start,
                       direct_io=self.storage.direct, address=str(config.address))
        if not self._take_roster(header):
            self.log.close()
            return NOT_A_MEMBER_EXIT
        if not self.storage.direct:
            self.log.write("warning", text="the SR medium refused O_DIRECT; using buffered I/O")
        if config.unsafe_watchdog_delay:
            self._warn(f"UNSAFE: the watchdog fires {config.unsafe_watchdog_delay:.2f} s after "
                       "the fence window assumes (unsafe_watchdog_delay, tests only)")
        if self.systemd.problem:
            self._warn(self.systemd.problem)
        self._check_watchdog_sec()
        servers: list[asyncio.AbstractServer] = []
        try:
            await self.liveness.start(self)
            self.watchdog.start(config.log)
            if self.pool_file is not None:
                def agent_on(host: str) -> Awaitable[Listener]:
                    return rpc.serve(host, config.agent_port, lambda: self.keys,
                                     self.agent_request, self.agent.stats,
                                     target=rpc.target(config.my_uuid))

                servers.append(await agent_on(config.address.host))
                servers += await serve_on_other_networks(
                    self.roster.service_hosts(config.index), config.address.host, agent_on,
                    self.log.write, "agent")
            if self.plane is not None:
                servers.append(await self.plane.start())
                servers += await self.plane.serve_other_networks()
            servers.append(await serve_status(config.status_socket, self.shared_status))
            self.tasks.spawn(self.main_lag.run(), "main loop lag probe")
            if self.plane is not None:
                self.tasks.spawn(self._watch_margins(), "margin watch")
            if config.http is not None:
                self.web = self._web_face(config.http)
                await self.web.start()
                self.log.write("http", url=self.web.url)
            self.loop.add_signal_handler(signal.SIGTERM, self.leave)
            if self.plane is not None:
                self.plane.started(header.generation, header.state is PoolState.ACTIVE,
                                   self.timing.T)
            if header.state is PoolState.ACTIVE or self.plane is None:
                timeout = self.plane.pool_timeout() if self.plane is not None else None
                start = self.plane.resident_vms() if self.plane and self.armed_at_start \
                    else {}
                try:
                    await self.arm(header.generation, timeout, self.armed_at_start, start)
                except WatchdogDeviceError as error:
                    self.log.write("stopping", sync=True, reason=str(error))
                    say(Level.ERR, str(error))
                    return 1
            else:
                self.log.write("ha-off", state=header.state.name)
                if self.plane is not None:
                    await self.plane.ha_off()
            self.systemd.ready()
            return await self.exit_code
        finally:
            self.tasks.cancel_all()
            self._stop_duties()
            self.driver.kill_all()
            for each in servers:
                each.close()
            if self.web is not None:
                await self.web.stop()
            self.liveness.stop()
            await self.watchdog.settle(DEVICE_SETTLE)
            self.log.close()
            with contextlib.suppress(OSError):
                config.status_socket.unlink()

    def _web_face(self, face: HttpFace) -> WebFace:
        """The HTTP face: plain on loopback; off it, the management API's TLS and credentials."""
        plane = self.plane
        pool = None if plane is None else self._pool_view
        if face.loopback:
            return WebFace(face, self.shared_status, pool)
        assert plane is not None and plane.mgmt is not None  # NodeConfig checked it
        mgmt = plane.mgmt
        return WebFace(face, self.shared_status, pool, Guard(mgmt.secret, plane.denied_credentials),
                       server_context(CertFiles(mgmt.cert, mgmt.key), mgmt.ca))

    async def _pool_view(self) -> dict[str, Any]:
        """The pool as the master sees it (its ``status`` verb), for the status page."""
        assert self.plane is not None and self.plane.server is not None
        answer: dict[str, Any] = await self.plane.server.ask("status", PAGE_READER)
        return answer

    async def _watch_margins(self) -> None:
        """While armed, raise ``ha_margin_low`` for a figure that uses half its limit."""
        assert self.plane is not None
        alerts = MarginAlerts()
        while True:
            await asyncio.sleep(MARGIN_CHECK)
            core = self.core
            if core is None or not core.armed:
                continue
            for row in alerts.due(margins(await self.shared_status(), self.timing), self.now()):
                self.plane.local_alert(
                    "ha_margin_low", self.config.my_uuid,
                    f"host {self.config.index}: {row['what']} reached {row['worst']:.3f} s, "
                    f"{row['used'] * 100:.0f}% of its limit ({row['limit_name']} "
                    f"{row['limit']:.3f} s): a little more and it causes a false fence; "
                    "hactl pool-ha-margins shows them all")

    def _warn(self, text: str) -> None:
        """A warning for the event log and the daemon's stderr (systemd's journal)."""
        self.log.write("warning", text=text)
        say(Level.WARNING, f"warning: {text}")

    def _check_watchdog_sec(self) -> None:
        problem = watchdog_sec_problem(self.systemd.watchdog_sec, self.timing)
        if problem is not None:
            self._warn(problem)

    def _read_header(self) -> GlobalBlock:
        """The SR's global block; if unreadable, what this host's database copy says
        (HA enabled: join and wait for the SR; the operator may run the emergency
        procedures meanwhile)."""
        try:
            return self.storage.header()
        except (OSError, SRError) as error:
            if self.plane is None:
                raise
            self.log.write("warning", text=f"cannot read the heartbeat SR: {error}")
            ha = self.plane.known.ha
            state = PoolState.ACTIVE if ha.enabled else PoolState.NONE
            return GlobalBlock(ha.sr_generation, state, None, self.config.capacity)

    def _take_roster(self, header: GlobalBlock) -> bool:
        """Adopt the SR's member table of this generation, if any; False (said on
        stderr and in the log) if it does not list this host."""
        try:
            table = self.storage.members(header.generation)
            if table is None:
                return True
            roster = Roster.from_table(table, len(self.config.addresses))
        except (OSError, MembersError) as error:
            self.log.write("warning", text=f"member table unreadable, using node.toml: {error}")
            return True
        me = self.config.index
        if not roster.holds(me, self.config.my_uuid):
            text = (f"this host ({self.config.my_uuid}, index {me}) is not a member of the "
                    f"pool: the SR's member table (version {roster.version}) lists "
                    f"{sorted(roster.names.values())}; it was ejected, or has not joined "
                    "(hactl pool-join)")
            self.log.write("not-a-member", sync=True, text=text)
            say(Level.ERR, text)
            return False
        self.liveness.use(roster)
        self.members_changed(roster)
        return True

    def _critical_exit(self, why: str) -> None:
        """A task the node cannot run without ended: fence if armed, else stop."""
        if self.exit_code.done():
            return
        if self.core is not None and self.core.armed:
            self.liveness.fence_if_armed(why)
        else:
            self.log.write("stopping", sync=True, reason=why)
            self.driver.kill_all()
            self.exit_code.set_result(1)

    # ------------------------------------------------------------ HA on and off
    async def arm(self, generation: int, timeout: float | None, armed: bool,
                  start: dict[str, dict[str, Any]]) -> None:
        """Run the liveness core: armed with the whole pool (HA enable), else joining.

        ``start``: this host's VMs to start first (vm uuid -> its start request)."""
        if self.core is not None:
            raise RuntimeError(f"HA is already running on host {self.config.index}")
        if timeout is not None and timeout != self.timing.T:
            self.timing = Timing.derive(timeout)
            self._check_watchdog_sec()
        self.leaving = False
        for vm, request in start.items():
            if vm in self.driver.running():
                continue
            answer = await self.agent.handle(request)
            self.log.write("vm-started" if answer["ok"] else "vm-start-failed", vm=vm,
                           on=self.config.index, why="HA enable",
                           error=answer.get("error", ""))
        await self.liveness.call(self.liveness.arm(generation, self.timing, armed))

    def disarm(self, leaving: bool) -> None:
        """A clean stop of HA here: announced excluded, never treated as a failure."""
        self.leaving = leaving
        if leaving:
            self.systemd.stopping()
        if self.core is None:
            if leaving:
                self.driver.kill_all()
                self._exit(0)
            return
        self.liveness.shut_down()

    def leave(self) -> None:
        self.disarm(leaving=True)

    def _exit(self, code: int) -> None:
        if not self.exit_code.done():
            self.exit_code.set_result(code)

    async def rekey(self, keys: KeyRing) -> None:
        """Hold ``keys`` from now on: files, liveness loop, then this loop's users."""
        if self.config.key_file is not None:
            await asyncio.to_thread(store_ring, self.config.key_file, keys)
        async with asyncio.timeout(STATUS_WAIT):
            await self.liveness.call(self.liveness.rekey(keys))
        self.keys = keys

    # ------------------------------------------------------------ workloads
    def host_uuid(self, index: int) -> str:
        return self.roster.uuids.get(index, "")

    def host_uuids(self) -> list[str]:
        """Host ``i``'s uuid at ``i`` ("" for an index no host holds)."""
        return [self.host_uuid(i) for i in range(self.config.capacity)]

    def last_beats(self, index: int) -> list[float | None]:
        """When host ``index``'s last heartbeat came in on each network."""
        return self.liveness.last_beats(index)

    def live_hosts(self) -> frozenset[str] | None:
        core = self.core
        if core is None or not core.armed:
            return None
        return frozenset(self.host_uuid(i) for i in core.liveset or ())

    async def agent_request(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("op") == "start" and not self._may_start():
            return {"ok": False, "error": f"host {self.config.index} is not armed: "
                    "it runs no VM for HA"}
        if self.plane is not None and request.get("op") in self.plane.AGENT_OPS:
            return await self.plane.agent_request(request)
        return await self.agent.handle(request)

    def _may_start(self) -> bool:
        """Armed, or HA off in the whole pool (an operator's move): never while the
        pool runs HA without this host."""
        core = self.core
        if core is not None:
            return core.armed
        return self.plane is not None and not self.plane.known.ha.enabled

    def start_duties(self) -> None:
        """The plane holds the database as master: run the master's duties."""
        if self.plane is None or self.config.vm_dir is None or self.duties is not None:
            return
        self.duties = self.plane.duties(pass_interval(self.timing.t1))
        self._duties_task = self.tasks.spawn(self.duties.run(), "master duties", critical=True)

    def _stop_duties(self) -> None:
        task, self._duties_task, self.duties = self._duties_task, None, None
        if task is not None:
            task.cancel()

    # ------------------------------------------------------------ liveness.NodeSide
    def committed(self, commit: LivesetCommitted) -> None:
        if commit.evidence is not None:  # made here, once: off the liveness loop
            record = evidence_record(commit, time.time() - self.now())  # one clock: both loops'
            self.evidence.commits.append(record)
            self.log.write("evidence", **record)
        if self.duties is not None:
            self.duties.committed(commit, self.host_uuids())
        if commit.added and self.plane is not None:
            self.plane.hosts_returned()

    def members_changed(self, roster: Roster) -> None:
        self.roster = roster
        if self.plane is not None:
            self.plane.members_changed(roster)

    def master_gained(self) -> None:
        if self.plane is not None:
            self.plane.master_gained()

    def master_lost(self) -> None:
        self._stop_duties()
        if self.plane is not None:
            self.plane.master_lost()

    def entered_rule2(self) -> None:
        if self.plane is not None:
            me = self.host_uuid(self.config.index)
            self.plane.local_alert("ha_survival_rule_2", me,
                                   f"host {self.config.index} entered survival-rule-2 mode: "
                                   "the whole pool lost the heartbeat SR; no master until it "
                                   "is back, and any further failure fences every host")

    def ha_disarmed(self) -> None:
        self._stop_duties()
        if self.leaving or self.plane is None:
            self.driver.kill_all()
            self._exit(0)
            return
        self.tasks.spawn(self.plane.ha_off(), "HA off")  # the VMs keep running

    def fenced(self) -> None:
        self._stop_duties()
        self._exit(FENCED_EXIT)

    # ------------------------------------------------------------ status
    async def status(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(STATUS_WAIT):
                liveness = await self.liveness.call(self.liveness.snapshot())
        except TimeoutError:
            liveness = {"phase": "UNKNOWN", "liveness": "its loop did not answer in time"}
        return {
            "host": self.config.index,
            "address": str(self.config.address),
            "networks": [str(a) for a in self.config.addresses],
            "boot": self.boot,
            "heartbeat_sr": {"uuid": self.storage.uuid, "path": str(self.storage.path),
                             "direct": self.storage.direct},
            "vms": sorted(self.driver.running()),
            "log": self.log.stats(),
            "rpc": self.agent.stats.counts(),
            "roster": {str(i): {"uuid": self.roster.uuids.get(i, ""), "name": name}
                       for i, name in sorted(self.roster.names.items())},
            **({"pool": self.duties.status()} if self.duties is not None else {}),
            **(self.plane.status() if self.plane is not None else {}),
            **liveness,
            # the liveness loop handed copies over: summed up here, on this loop
            "measured": {**_summaries(liveness.get("measured", {})),
                         "main_lag": self.main_lag.samples.summary()},
            "heartbeat_gaps": _summaries(liveness.get("heartbeat_gaps", {})),
        }


def _summaries(figures: dict[str, Samples]) -> dict[str, dict[str, Any]]:
    return {name: samples.summary() for name, samples in figures.items()}


def next_boot(state_dir: Path) -> int:
    """A boot id greater than any earlier one of this host (wall-clock ms, persisted)."""
    path = state_dir / "boot"
    previous = int(path.read_text()) if path.exists() else 0
    boot = max(previous + 1, int(time.time() * 1000))
    path.write_text(str(boot))
    return boot


async def serve(config: NodeConfig, armed: bool) -> int:
    node = Node(config, armed, next_boot(config.status_socket.parent))
    return await node.run()
