"""The node daemon: an asyncio adapter that drives :class:`HostCore` with real I/O.

Rules:

* The core decides; this module only moves bytes. Every input is stamped with
  the event loop's monotonic clock; every output is carried out in order by
  the one interpreter (:func:`hacluster.core.effects.carry_out`), whose
  effects this node binds to sockets, the SR thread and the watchdog.
* Heartbeats are sealed reports over UDP to every configured host, on every
  heartbeat network (IPv4 or IPv6) the configuration lists; anything
  that fails to open (wrong key, truncated, oversized, garbage) is dropped
  and counted before the core sees it.
* Storage I/O runs in one dedicated thread with the core's I/O deadline
  (:mod:`hacluster.node.sr_thread`).
* Fencing does not depend on this loop: a separate watchdog process kills the
  node's process group when pets stop. On a fence decided by the core the
  reason is logged synchronously, the last words (a FENCED report) are written
  with a short deadline, and the daemon exits with :data:`FENCED_EXIT`.
* Under systemd (``NOTIFY_SOCKET``) it reports READY and pets ``WatchdogSec=``
  along with its own watchdog.
* ``SIGTERM`` is a clean shutdown: the host announces itself excluded first.
* A Unix socket answers every connection with the node's status as JSON
  (:mod:`hacluster.node.status`).
* A core that breaks its own rules (a phase change outside its table, a
  violated invariant) is trusted no further: the node fences at once.
* Every task runs under the node's :class:`~hacluster.node.tasks.Supervisor`;
  the storage worker and the master's duties are critical: if either ends
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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hacluster.core.effects import carry_out
from hacluster.core.events import (
    HeartbeatReceived,
    Input,
    LivesetCommitted,
    Output,
    PhaseChanged,
    ReadSlots,
    Shutdown,
    SlotsRead,
    SlotWritten,
    Tick,
    Wait,
    Watchdog,
    WriteSlot,
)
from hacluster.core.messages import HostSet, Report
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.phases import IllegalTransition, InvariantViolation
from hacluster.core.timing import Timing
from hacluster.node.agent import Agent
from hacluster.node.config import NodeConfig
from hacluster.node.eventlog import EventLog
from hacluster.node.master import MasterDuties
from hacluster.node.plane import Plane
from hacluster.node.sr_thread import Storage
from hacluster.node.status import query_status, serve_status
from hacluster.node.tasks import Supervisor
from hacluster.node.watchdog_client import WatchdogClient
from hacluster.storage.sr import GlobalBlock, PoolState, SRError
from hacluster.vm.driver import ProcessDriver
from hacluster.wire import rpc
from hacluster.wire.codec import DecodeError, Sealer

__all__ = ["FENCED_EXIT", "Node", "handle_or_fence", "next_boot", "query_status", "serve"]

FENCED_EXIT = 75


class Heartbeats(asyncio.DatagramProtocol):
    def __init__(self, node: Node, network: int) -> None:
        self.node = node
        self.network = network

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.node.received[self.network] += 1
        try:
            report = self.node.sealer.open(data)
        except DecodeError as error:
            self.node.bad_packets += 1
            self.node.last_bad_packet = str(error)
            return
        self.node.feed(HeartbeatReceived(self.node.now(), report))


class Node:
    """One host's daemon: HA on and off, workloads, and the effects of its core."""

    def __init__(self, config: NodeConfig, armed: bool, boot: int) -> None:
        self.config = config
        self.armed_at_start = armed
        self.boot = boot
        self.sealer = Sealer.for_heartbeats(config.key, len(config.hosts))
        self.log = EventLog(config.log, config.index)
        self.storage = Storage(config, Sealer.for_slots(config.key, len(config.hosts)))
        self.loop = asyncio.get_running_loop()
        self.tasks = Supervisor(self.log.write, self._critical_exit)
        self.bad_packets = 0
        self.received = [0] * len(config.addresses)
        self.last_bad_packet = ""
        self.exit_code: asyncio.Future[int] = self.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._io: asyncio.Queue[WriteSlot | ReadSlots] = asyncio.Queue()
        self.core: HostCore | None = None  # None while HA is off on this host
        self.timing = config.timing
        self.leaving = False  # a Disarmed output ends the daemon (else: back to HA off)
        self.in_rule2 = False
        self.transports: list[asyncio.DatagramTransport] = []
        self.watchdog = WatchdogClient()
        self.pool_file = config.pool
        self.driver = ProcessDriver()
        self.agent = Agent(self.driver)
        self.duties: MasterDuties | None = None
        self._duties_task: asyncio.Task[None] | None = None
        self.plane = Plane(self) if config.mgmt is not None and config.pool is not None \
            else None

    def now(self) -> float:
        return self.loop.time()

    async def run(self) -> int:
        config = self.config
        header = self._read_header()
        self.log.write("start", boot=self.boot, generation=header.generation,
                       state=header.state.name, armed=self.armed_at_start,
                       direct_io=self.storage.device.direct, address=str(config.address))
        if not self.storage.device.direct:
            self.log.write("warning", text="the SR medium refused O_DIRECT; using buffered I/O")
        if config.unsafe_watchdog_delay:
            text = (f"UNSAFE: the watchdog fires {config.unsafe_watchdog_delay:.2f} s after "
                    "the fence window assumes (unsafe_watchdog_delay, tests only)")
            self.log.write("warning", text=text)
            print(f"hacluster node: {text}", file=sys.stderr, flush=True)
        self.transports = []
        for network, address in enumerate(config.addresses):
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda n=network: Heartbeats(self, n),  # type: ignore[misc]
                local_addr=(address.host, address.port))
            self.transports.append(transport)
        self.watchdog.start(config.log)
        servers = []
        if self.pool_file is not None:
            servers.append(await rpc.serve(config.address.host, config.agent_port, config.key,
                                           self.agent_request, self.agent.stats))
        if self.plane is not None:
            servers.append(await self.plane.start())
        servers.append(await serve_status(config.status_socket, self.status))
        self.loop.add_signal_handler(signal.SIGTERM, self.leave)
        self.tasks.spawn(self._storage_worker(), "storage worker", critical=True)
        if self.plane is not None:
            self.plane.started(header.generation, header.state is PoolState.ACTIVE,
                               self.timing.T)
        if header.state is PoolState.ACTIVE or self.plane is None:
            timeout = self.plane.pool_timeout() if self.plane is not None else None
            start = self.plane.resident_vms() if self.plane and self.armed_at_start else {}
            await self.arm(header.generation, timeout, self.armed_at_start, start)
        else:
            self.log.write("ha-off", state=header.state.name)
            if self.plane is not None:
                await self.plane.ha_off()
        self.watchdog.ready()
        try:
            return await self.exit_code
        finally:
            self.tasks.cancel_all()
            self._stop_duties()
            self.driver.kill_all()
            for each in servers:
                each.close()
            for transport in self.transports:
                transport.close()
            with contextlib.suppress(OSError):
                config.status_socket.unlink()

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
            return GlobalBlock(ha.sr_generation, state, None, len(self.config.hosts))

    def _critical_exit(self, why: str) -> None:
        """A task the node cannot run without ended: fence if armed, else stop."""
        if self.exit_code.done():
            return
        if self.core is not None and self.core.armed:
            self.fence(why)
        else:
            self.log.write("stopping", sync=True, reason=why)
            self.driver.kill_all()
            self.exit_code.set_result(1)

    # ------------------------------------------------------------ HA on and off
    async def arm(self, generation: int, timeout: float | None, armed: bool,
                  start: dict[str, list[str]]) -> None:
        """Run the liveness core: armed with the whole pool (HA enable), else joining.

        ``start``: this host's VMs to start first (vm uuid -> command)."""
        if self.core is not None:
            raise RuntimeError(f"HA is already running on host {self.config.index}")
        if timeout is not None and timeout != self.timing.T:
            self.timing = Timing.derive(timeout)
            self.storage.deadline = self.timing.io_deadline
        hosts = frozenset(range(len(self.config.hosts)))
        self.leaving = False
        for vm, command in start.items():
            if vm in self.driver.running():
                continue
            answer = await self.agent.handle({"op": "start", "vm": vm, "command": command})
            self.log.write("vm-started" if answer["ok"] else "vm-start-failed", vm=vm,
                           on=self.config.index, why="HA enable",
                           error=answer.get("error", ""))
        self.core = HostCore(
            CoreConfig(self.timing, len(hosts), generation, self.config.mode),
            self.config.index, self.boot, self.now(), liveset=hosts if armed else None)
        self.log.write("ha-on", generation=generation, armed=armed, timeout=self.timing.T)
        self.feed(Tick(self.now()))

    def disarm(self, leaving: bool) -> None:
        """A clean stop of HA here: announced excluded, never treated as a failure."""
        self.leaving = leaving
        if self.core is None:
            if leaving:
                self.driver.kill_all()
                self.exit_code.set_result(0)
            return
        self.feed(Shutdown(self.now()))

    def leave(self) -> None:
        self.disarm(leaving=True)

    # ------------------------------------------------------------ workloads
    def host_uuid(self, index: int) -> str:
        assert self.pool_file is not None
        return self.pool_file.pool.hosts[index].uuid

    def host_uuids(self) -> list[str]:
        assert self.pool_file is not None
        return [h.uuid for h in self.pool_file.pool.hosts]

    def live_hosts(self) -> frozenset[str] | None:
        if self.core is None or not self.core.armed:
            return None
        return frozenset(self.host_uuid(i) for i in self.core.liveset or ())

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
        if self.core is not None:
            return self.core.armed
        return self.plane is not None and not self.plane.known.ha.enabled

    def start_duties(self) -> None:
        """The plane holds the database as master: run the master's duties."""
        if self.plane is None or self.config.vm_dir is None or self.duties is not None:
            return
        self.duties = self.plane.duties(self.timing.t1)
        self._duties_task = self.tasks.spawn(self.duties.run(), "master duties", critical=True)

    def _stop_duties(self) -> None:
        task, self._duties_task, self.duties = self._duties_task, None, None
        if task is not None:
            task.cancel()

    # ------------------------------------------------------------ core driving
    def feed(self, event: Input) -> None:
        if self.exit_code.done() or self.core is None:
            return
        outputs = handle_or_fence(self.core, event, self.fence)
        if outputs is not None:
            carry_out(outputs, self)

    async def _storage_worker(self) -> None:
        while True:
            request = await self._io.get()
            if isinstance(request, WriteSlot):
                ok, error = await self.storage.write(request.report)
                self.feed(SlotWritten(self.now(), ok, error))
            else:
                slots, error = await self.storage.read()
                self.feed(SlotsRead(self.now(), slots, error))

    # ------------------------------------------------------------ effects.Effects
    def send_heartbeat(self, report: Report, to: HostSet) -> None:
        self._broadcast(self.sealer.seal(report), to)

    def request_io(self, request: WriteSlot | ReadSlots) -> None:
        self._io.put_nowait(request)

    def pet_watchdog(self, which: Watchdog, timeout: float) -> None:
        self.watchdog.pet(which, timeout + self.config.unsafe_watchdog_delay)

    def fence(self, reason: str) -> None:
        assert self.core is not None
        self.log.write("fence", sync=True, reason=reason)
        self._stop_duties()
        self.driver.kill_all()  # its VMs die before its last words say it fenced
        last_words = self.core.fenced_report()
        with contextlib.suppress(Exception):
            others = frozenset(range(len(self.config.hosts))) - {self.config.index}
            self._broadcast(self.sealer.seal(last_words), others)
            self.storage.write_last_words(last_words)
        self.watchdog.disarm()
        self.exit_code.set_result(FENCED_EXIT)

    def disarmed(self, reason: str) -> None:
        self.watchdog.disarm()
        self.log.write("disarmed", reason=reason)
        if self._timer is not None:
            self._timer.cancel()
        self._stop_duties()
        if self.leaving or self.plane is None:
            self.driver.kill_all()
            self.exit_code.set_result(0)
            return
        self.core = None  # HA off here; the VMs keep running
        self.tasks.spawn(self.plane.ha_off(), "HA off")

    def liveset_committed(self, commit: LivesetCommitted) -> None:
        self.log.write("commit", liveset=commit.liveset, removed=commit.removed,
                       added=commit.added, left=commit.excluded)
        if self.duties is not None:
            self.duties.committed(commit, self.host_uuids())

    def master_gained(self) -> None:
        self.log.write("master", gained=True)
        if self.plane is not None:
            self.plane.master_gained()

    def master_lost(self, reason: str) -> None:
        self.log.write("master", gained=False, reason=reason)
        self._stop_duties()
        if self.plane is not None:
            self.plane.master_lost()

    def phase_changed(self, change: PhaseChanged) -> None:
        self.log.write("phase", old=change.old.name, new=change.new.name, why=change.why)
        self._watch_rule2()

    def suspect(self, host: int, channel: str) -> None:
        self.log.write("suspect", peer=host, channel=channel)

    def waiting(self, waits: tuple[Wait, ...]) -> None:
        self.log.write("waiting", waits=[w.text for w in waits])

    def wake_at(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if at != float("inf"):
            self._timer = self.loop.call_at(at, lambda: self.feed(Tick(self.now())))

    def _watch_rule2(self) -> None:
        rule2 = self.core is not None and self.core.rule2
        if rule2 and not self.in_rule2 and self.plane is not None:
            me = self.host_uuid(self.config.index)
            self.plane.local_alert("ha_survival_rule_2", me,
                                   f"host {self.config.index} entered survival-rule-2 mode: "
                                   "the whole pool lost the heartbeat SR; no master until it "
                                   "is back, and any further failure fences every host")
        self.in_rule2 = rule2

    def _broadcast(self, packet: bytes, peers: frozenset[int]) -> None:
        """Send on every heartbeat network: the copies after the first are stale."""
        for peer in peers:
            for transport, address in zip(self.transports, self.config.hosts[peer], strict=True):
                transport.sendto(packet, (address.host, address.port))

    # ------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        core = self.core
        common = {
            "host": self.config.index,
            "address": str(self.config.address),
            "networks": [str(a) for a in self.config.addresses],
            "received_per_network": self.received,
            "boot": self.boot,
            "timeout": self.timing.T,
            "vms": sorted(self.driver.running()),
            "dropped": {"bad_packets": self.bad_packets},
            "last_bad_packet": self.last_bad_packet,
            **({"pool": self.duties.status()} if self.duties is not None else {}),
            **(self.plane.status() if self.plane is not None else {}),
        }
        if core is None:
            return {**common, "phase": "HA_OFF", "armed": False, "master": False,
                    "liveset": [], "hbdomain": [], "sfdomain": [], "rule2": False,
                    "last_beat_age": {}}
        t = core.now
        return {
            **common,
            "phase": core.phase.name,
            "armed": core.armed,
            "master": core.is_master,
            "liveset": sorted(core.liveset or ()),
            "hbdomain": sorted(core.hbdomain),
            "sfdomain": sorted(core.sfdomain),
            "rule2": core.rule2,
            "waiting": [w.text for w in core.waits()],
            "last_beat_age": {
                str(i): round(t - p.last_net, 3) for i, p in enumerate(core.peers)
                if i != self.config.index and p.last_net != float("-inf")
            },
            "dropped": {**core.counters.__dict__, "bad_packets": self.bad_packets},
        }


def handle_or_fence(core: HostCore, event: Input,
                    fence: Callable[[str], None]) -> list[Output] | None:
    """The core's outputs for ``event``; if the core broke its own rules (an edge
    outside its phase table, a violated invariant), nothing it says can be
    trusted: fence at once (rather than wait for the watchdog) and return None."""
    try:
        return core.handle(event)
    except (IllegalTransition, InvariantViolation) as error:
        fence(f"the liveness core broke its own rules: {error}")
        return None


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
