"""The node daemon: an asyncio adapter that drives :class:`HostCore` with real I/O.

Rules:

* The core decides; this module only moves bytes. Every input is stamped with
  the event loop's monotonic clock; every output is carried out in order.
* Heartbeats are sealed reports over UDP to every configured host, on every
  heartbeat network (IPv4 or IPv6) the configuration lists; anything
  that fails to open (wrong key, truncated, oversized, garbage) is dropped
  and counted before the core sees it.
* Storage I/O runs in one dedicated thread with the core's I/O deadline. A
  request that overruns is reported to the core as failed; while the volume
  stays hung, new requests fail at once instead of queueing behind it.
* Fencing does not depend on this loop: a separate watchdog process kills the
  node's process group when pets stop. On a fence decided by the core the
  reason is logged synchronously, the last words (a FENCED report) are written
  with a short deadline, and the daemon exits with :data:`FENCED_EXIT`.
* Under systemd (``NOTIFY_SOCKET``) it reports READY and pets ``WatchdogSec=``
  along with its own watchdog.
* ``SIGTERM`` is a clean shutdown: the host announces itself excluded first.
* A Unix socket answers every connection with the node's status as JSON.
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
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hacluster.core.events import (
    Disarmed,
    Fence,
    HeartbeatReceived,
    Input,
    LivesetCommitted,
    MasterGained,
    MasterLost,
    Output,
    PetWatchdog,
    PhaseChanged,
    ReadSlots,
    SendHeartbeat,
    Shutdown,
    SlotContent,
    SlotsRead,
    SlotWritten,
    Suspect,
    Tick,
    Waiting,
    Wakeup,
    WriteSlot,
)
from hacluster.core.messages import Report
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.timing import Timing
from hacluster.node.agent import Agent
from hacluster.node.config import NodeConfig
from hacluster.node.master import MasterDuties
from hacluster.node.plane import Plane
from hacluster.storage.sr import (
    BlockDevice,
    GlobalBlock,
    PoolState,
    SRError,
    decode_slot,
    encode_slot,
    slot_offset,
    write_layout,
)
from hacluster.vm.driver import ProcessDriver
from hacluster.wire import rpc
from hacluster.wire.codec import DecodeError, Sealer

FENCED_EXIT = 75


class EventLog:
    """Structured log: one JSON object per line, flushed as written."""

    def __init__(self, path: Path | None, host: int) -> None:
        self.host = host
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else 2

    def write(self, event: str, sync: bool = False, **fields: Any) -> None:
        record = {"time": round(time.time(), 3), "host": self.host, "event": event, **fields}
        os.write(self.fd, (json.dumps(record, default=sorted) + "\n").encode())
        if sync and self.fd != 2:
            os.fsync(self.fd)


class Storage:
    """The heartbeat SR seen through one thread with a deadline per request."""

    def __init__(self, config: NodeConfig, sealer: Sealer) -> None:
        self.device = BlockDevice(config.sr)
        self.sealer = sealer
        self.config = config
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="storage")
        self.busy: concurrent.futures.Future[Any] | None = None
        self.deadline = config.timing.io_deadline

    def header(self) -> GlobalBlock:
        return GlobalBlock.decode(self.device.read(0), self.config.key)

    def write_header(self, generation: int, active: bool) -> None:
        """HA enable (a fresh generation, empty slots) or disable (the pool invalid)."""
        hosts = len(self.config.hosts)
        if active:
            write_layout(self.device, GlobalBlock(generation, PoolState.ACTIVE, None, hosts),
                         self.config.key)
        else:
            self.device.write(0, GlobalBlock(generation, PoolState.INVALID, None,
                                             hosts).encode(self.config.key))

    def _write(self, report: Report) -> None:
        self.device.write(slot_offset(report.sender), encode_slot(self.sealer, report))

    def _read(self) -> dict[int, SlotContent]:
        return {i: decode_slot(self.sealer, self.device.read(slot_offset(i)), i)
                for i in range(len(self.config.hosts))}

    async def run(self, job: Callable[[], Any]) -> tuple[bool, Any, str]:
        if self.busy is not None and not self.busy.done():
            return False, None, "volume hung: previous request still in flight"
        self.busy = self.pool.submit(job)
        try:
            value = await asyncio.wait_for(asyncio.wrap_future(self.busy), self.deadline)
        except TimeoutError:
            return False, None, "I/O deadline exceeded"
        except OSError as error:
            return False, None, f"I/O error: {error}"
        return True, value, ""

    async def write(self, report: Report) -> tuple[bool, str]:
        ok, _, error = await self.run(lambda: self._write(report))
        return ok, error

    async def read(self) -> tuple[dict[int, SlotContent] | None, str]:
        ok, slots, error = await self.run(self._read)
        return (slots if ok else None), error


class SystemdNotifier:
    """``sd_notify`` when run by systemd (``NOTIFY_SOCKET`` set): READY, and
    WATCHDOG on every pet, so ``WatchdogSec=`` restarts a daemon that stops
    petting even if its watchdog process were gone."""

    def __init__(self) -> None:
        path = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.socket: socket.socket | None = None
        if self.address:
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def notify(self, message: bytes) -> None:
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.sendto(message, self.address)


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
        self.node.feed(HeartbeatReceived(self.node.loop.time(), report))


class Node:
    def __init__(self, config: NodeConfig, armed: bool, boot: int) -> None:
        self.config = config
        self.armed_at_start = armed
        self.boot = boot
        self.sealer = Sealer(config.key, len(config.hosts))
        self.log = EventLog(config.log, config.index)
        self.storage = Storage(config, self.sealer)
        self.loop = asyncio.get_running_loop()
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
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.systemd = SystemdNotifier()
        self.pool_file = config.pool
        self.driver = ProcessDriver()
        self.agent = Agent(self.driver)
        self.duties: MasterDuties | None = None
        self._duties_task: asyncio.Task[None] | None = None
        self.plane = Plane(self) if config.mgmt is not None and config.pool is not None \
            else None

    async def run(self) -> int:
        config = self.config
        header = self._read_header()
        self.log.write("start", boot=self.boot, generation=header.generation,
                       state=header.state.name, armed=self.armed_at_start,
                       direct_io=self.storage.device.direct, address=str(config.address))
        if not self.storage.device.direct:
            self.log.write("warning", text="the SR medium refused O_DIRECT; using buffered I/O")
        safe_window = config.timing.minimum_fence_window()
        if config.timing.fence_window < safe_window:
            text = (f"UNSAFE: fence window {config.timing.fence_window:.2f} s below the "
                    f"{safe_window:.2f} s safety needs (unsafe_fence_window, tests only)")
            self.log.write("warning", text=text)
            print(f"hacluster node: {text}", file=sys.stderr, flush=True)
        self.transports = []
        for network, address in enumerate(config.addresses):
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda n=network: Heartbeats(self, n),  # type: ignore[misc]
                local_addr=(address.host, address.port))
            self.transports.append(transport)
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)  # lead a process group: the watchdog kills it whole
        self.watchdog = subprocess.Popen(
            [sys.executable, "-m", "hacluster.node.watchdog", "--group", str(os.getpgrp()),
             *(["--log", str(config.log)] if config.log else [])],
            stdin=subprocess.PIPE, start_new_session=True)
        servers = []
        if self.pool_file is not None:
            servers.append(await rpc.serve(config.address.host, config.agent_port, config.key,
                                           self.agent_request, self.agent.stats))
        if self.plane is not None:
            servers.append(await self.plane.start())
        server = await asyncio.start_unix_server(self._status, path=str(config.status_socket))
        self.loop.add_signal_handler(signal.SIGTERM, self.leave)
        io_task = asyncio.create_task(self._storage_worker())
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
        self.systemd.notify(b"READY=1")
        try:
            return await self.exit_code
        finally:
            io_task.cancel()
            self._stop_duties()
            self.driver.kill_all()
            for each in servers:
                each.close()
            server.close()
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
            self.config.index, self.boot, self.loop.time(), liveset=hosts if armed else None)
        self.log.write("ha-on", generation=generation, armed=armed, timeout=self.timing.T)
        self.feed(Tick(self.loop.time()))

    def disarm(self, leaving: bool) -> None:
        """A clean stop of HA here: announced excluded, never treated as a failure."""
        self.leaving = leaving
        if self.core is None:
            if leaving:
                self.driver.kill_all()
                self.exit_code.set_result(0)
            return
        self.feed(Shutdown(self.loop.time()))

    def leave(self) -> None:
        self.disarm(leaving=True)

    # ------------------------------------------------------------ workloads
    def host_uuid(self, index: int) -> str:
        assert self.pool_file is not None
        return self.pool_file.pool.hosts[index].uuid

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

    def _start_duties(self) -> None:
        if self.plane is None or self.config.vm_dir is None or self.duties is not None:
            return
        self.duties = self.plane.duties(self.timing.t1)
        self._duties_task = asyncio.create_task(self.duties.run())

    def _stop_duties(self) -> None:
        if self._duties_task is not None:
            self._duties_task.cancel()
        self.duties, self._duties_task = None, None

    # ------------------------------------------------------------ core driving
    def feed(self, event: Input) -> None:
        if self.exit_code.done() or self.core is None:
            return
        for out in self.core.handle(event):
            self._carry_out(out)

    def _carry_out(self, out: Output) -> None:
        if isinstance(out, SendHeartbeat):
            self._broadcast(self.sealer.seal(out.report), out.to)
        elif isinstance(out, WriteSlot | ReadSlots):
            self._io.put_nowait(out)
        elif isinstance(out, PetWatchdog):
            self._watchdog(f"pet {out.which.value} {out.timeout}")
            self.systemd.notify(b"WATCHDOG=1")
        elif isinstance(out, Disarmed):
            self._disarmed(out.reason)
        elif isinstance(out, Fence):
            self._fence(out.reason)
        elif isinstance(out, LivesetCommitted):
            self.log.write("commit", liveset=out.liveset, removed=out.removed, added=out.added,
                           left=out.excluded)
            failed = out.removed - out.excluded
            if self.duties is not None and failed:
                self.duties.hosts_failed(frozenset(self.host_uuid(i) for i in failed))
            if self.duties is not None and out.excluded:
                self.duties.hosts_left(frozenset(self.host_uuid(i) for i in out.excluded))
        elif isinstance(out, MasterGained):
            self.log.write("master", gained=True)
            if self.plane is not None:
                self.plane.master_gained()
        elif isinstance(out, MasterLost):
            self.log.write("master", gained=False, reason=out.reason)
            self._stop_duties()
            if self.plane is not None:
                self.plane.master_lost()
        elif isinstance(out, PhaseChanged):
            self.log.write("phase", old=out.old.name, new=out.new.name, why=out.why)
            self._watch_rule2()
        elif isinstance(out, Suspect):
            self.log.write("suspect", peer=out.host, channel=out.channel)
        elif isinstance(out, Waiting):
            self.log.write("waiting", waits=[w.text for w in out.waits])
        elif isinstance(out, Wakeup):
            if self._timer is not None:
                self._timer.cancel()
            if out.at != float("inf"):
                self._timer = self.loop.call_at(out.at, lambda: self.feed(Tick(self.loop.time())))

    def _watch_rule2(self) -> None:
        rule2 = self.core is not None and self.core.rule2
        if rule2 and not self.in_rule2 and self.plane is not None:
            me = self.host_uuid(self.config.index)
            self.plane.local_alert("ha_survival_rule_2", me,
                                   f"host {self.config.index} entered survival-rule-2 mode: "
                                   "the whole pool lost the heartbeat SR; no master until it "
                                   "is back, and any further failure fences every host")
        self.in_rule2 = rule2

    def _disarmed(self, reason: str) -> None:
        self._watchdog("disarm")
        self.log.write("disarmed", reason=reason)
        if self._timer is not None:
            self._timer.cancel()
        self._stop_duties()
        if self.leaving or self.plane is None:
            self.driver.kill_all()
            self.exit_code.set_result(0)
            return
        self.core = None  # HA off here; the VMs keep running
        self.loop.create_task(self.plane.ha_off())

    def _broadcast(self, packet: bytes, peers: frozenset[int]) -> None:
        """Send on every heartbeat network: the copies after the first are stale."""
        for peer in peers:
            for transport, address in zip(self.transports, self.config.hosts[peer], strict=True):
                transport.sendto(packet, (address.host, address.port))

    def _watchdog(self, command: str) -> None:
        if self.watchdog is not None and self.watchdog.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.watchdog.stdin.write(command.encode() + b"\n")
                self.watchdog.stdin.flush()

    def _fence(self, reason: str) -> None:
        assert self.core is not None
        self.log.write("fence", sync=True, reason=reason)
        self._stop_duties()
        self.driver.kill_all()  # its VMs die before its last words say it fenced
        last_words = self.core.fenced_report()
        with contextlib.suppress(Exception):
            others = frozenset(range(len(self.config.hosts))) - {self.config.index}
            self._broadcast(self.sealer.seal(last_words), others)
            self.storage.pool.submit(self.storage._write, last_words).result(
                timeout=self.timing.io_deadline)
        self._watchdog("disarm")
        self.exit_code.set_result(FENCED_EXIT)

    async def _storage_worker(self) -> None:
        while True:
            request = await self._io.get()
            if isinstance(request, WriteSlot):
                ok, error = await self.storage.write(request.report)
                self.feed(SlotWritten(self.loop.time(), ok, error))
            else:
                slots, error = await self.storage.read()
                self.feed(SlotsRead(self.loop.time(), slots, error))

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

    async def _status(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(self.status()).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


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


def query_status(socket_path: Path, timeout: float = 2.0) -> dict[str, Any]:
    """Read one node's status from its Unix socket; an ``OSError`` if it does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(socket_path))
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    try:
        status: dict[str, Any] = json.loads(data)
    except ValueError:
        # a node dying while it accepts closes without a word: it is not answering
        raise ConnectionError(f"{socket_path}: the node closed without a status "
                              f"({len(data)} bytes)") from None
    return status
