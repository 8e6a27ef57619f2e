"""The liveness path on a thread of its own: the core, heartbeats, slot I/O, watchdog pets.

Rules:

* Everything that keeps this host's deadlines runs on one event loop in one
  thread, the *liveness loop*: the liveness core (:class:`HostCore`), the
  heartbeat sockets, the storage worker (slot I/O through the SR thread) and
  the watchdog pets. Nothing else ever runs there: the management API, the
  host RPC, the master's duties, the database, mail and the status socket
  live on the daemon's main loop, which can stall (a flood, a slow disk, a
  slow peer) without this loop missing a beat. The event log it writes never
  blocks it either (:mod:`hacluster.node.eventlog`).
* Every input is stamped with this loop's monotonic clock (the same clock as
  the main loop's) and every output is carried out in order by the one
  interpreter (:func:`hacluster.core.effects.carry_out`).
* The two loops meet only through thread-safe calls. The main side asks this
  loop to arm, to shut HA down, to fence, and for a status snapshot; what the
  core decides that concerns the rest of the node (a liveset commit, master
  gained or lost, survival rule 2, HA disarmed, fenced) is posted to the main
  loop (:class:`NodeSide`) and never waited for. The main side may read the
  core's plain attributes (``armed``, ``is_master``, ``master_hint``,
  ``liveset``); anything computed is asked of this loop.
* A fence is carried out here, whatever the main loop is doing: the VMs are
  killed, the last words sent and written (within the I/O deadline), the
  watchdog disarmed, and then the main loop is told. If the process has not
  ended :data:`EXIT_GRACE` seconds later (its main loop is stuck), it exits
  from here with :data:`FENCED_EXIT`.
* Under systemd this loop pets ``WatchdogSec=`` on a timer of its own, in
  every state (HA off too), so a stuck liveness path is what systemd kills;
  it sends ``STATUS=`` (phase, master, liveset size) when that changes. A
  watchdog device is opened when HA starts here (:meth:`Liveness.arm`), with
  its timeout from the timing (:mod:`hacluster.node.watchdog_client`).
* A key rotation step swaps the keys here with :meth:`Liveness.rekey`, run on
  this loop (the main loop awaits it with :meth:`Liveness.call`, never
  blocking this one): the heartbeat sealer and the storage's slot sealer are
  replaced together, each one reference.
* **Members.** The roster (:mod:`hacluster.node.roster`) says which index
  each member holds and where it listens. Every slot read also brings the
  SR's member table; a newer one (a join or an eject) replaces the roster
  here, is fed to the core (:class:`~hacluster.core.events.MembersChanged`;
  an index now held by another host than this one counts as this host
  ejected) and is posted to the main loop.
* Heartbeats are read in batches (:mod:`hacluster.node.heartbeat_sockets`):
  while this host is NORMAL, drained before every other input (the core's
  ticks come at least every half beat) or at the latest :data:`IDLE_BATCH`
  of a beat after the last drain; in any other phase, at once. A polled
  batch is stamped with the drain before it: older evidence, never younger.
  A peer entering a fault is therefore noticed at most half a beat late,
  once; a change of phase changes the pace at once.
* A heartbeat datagram is looked at only if it comes from the address a peer
  has on that heartbeat network (one set lookup: a stranger's flood costs no
  decryption); then one that fails to open (wrong key, truncated, oversized,
  garbage) is dropped and counted before the core sees it. A core that breaks its own
  rules (an edge outside its phase table, a violated invariant) is trusted no
  further: the host fences at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from hacluster.core.effects import carry_out
from hacluster.core.events import (
    HeartbeatReceived,
    Input,
    LivesetCommitted,
    MembersChanged,
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
from hacluster.core.messages import HostSet, Phase, Report
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.phases import IllegalTransition, InvariantViolation
from hacluster.core.timing import Timing
from hacluster.node.config import NodeConfig
from hacluster.node.eventlog import EventLog
from hacluster.node.heartbeat_sockets import Datagram, HeartbeatSockets
from hacluster.node.measure import FaultTimeline, Samples
from hacluster.node.osthread import name_os_thread
from hacluster.node.roster import Roster
from hacluster.node.sr_thread import Storage
from hacluster.node.systemd import status_text
from hacluster.node.tasks import Supervisor
from hacluster.node.watchdog_client import WatchdogClient
from hacluster.node.watchdog_device import device_timeout
from hacluster.storage.members import MembersError, MemberTable
from hacluster.wire.codec import DecodeError, Sealer
from hacluster.wire.keys import KeyRing

FENCED_EXIT = 75
#: how long heartbeats may wait in their sockets, as a fraction of a beat, while
#: this host is NORMAL (otherwise they are read at once): more than the core's
#: tick (half a beat at most), so that the drain before each of its inputs is
#: the only one and a settled host wakes only for its core
IDLE_BATCH = 0.6
#: the liveness loop's measured figures: slot I/O from request to answer, how
#: late the core's timer fires, and each fault handler from NORMAL back to NORMAL
MEASURED = ("slot_write", "slot_read", "liveness_lag", "fault_handler")
GAP_WINDOW = 256  # the gaps a peer's quantiles are taken over, per network
EXIT_GRACE = 5.0  # a fenced process whose main loop does not end it exits after this
T = TypeVar("T")


class NodeSide(Protocol):
    """What the liveness loop tells the rest of the node (called on the main loop)."""

    def committed(self, commit: LivesetCommitted) -> None: ...
    def master_gained(self) -> None: ...
    def master_lost(self) -> None: ...
    def entered_rule2(self) -> None: ...
    def ha_disarmed(self) -> None: ...
    def fenced(self) -> None: ...
    def members_changed(self, roster: Roster) -> None: ...


def _same_kind_of_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the kind the entry point chose (uvloop in the daemon), so
    the liveness loop is no slower than the main one; a plain one otherwise."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = type(running)()
    return loop


class Liveness:
    """One host's liveness core and its I/O, run on a thread of their own."""

    def __init__(self, config: NodeConfig, boot: int, log: EventLog, storage: Storage,
                 watchdog: WatchdogClient, kill_vms: Callable[[], None]) -> None:
        self.config = config
        self.boot = boot
        self.log = log
        self.storage = storage
        self.watchdog = watchdog
        self.kill_vms = kill_vms
        self.roster = config.seed_roster()
        self.peer_hosts = self._peer_hosts()
        self.sealer = Sealer.for_heartbeats(storage.keys, config.capacity)
        self.timing = config.timing
        self.core: HostCore | None = None  # None while HA is off on this host
        self.bad_packets = 0
        self.strangers = 0  # datagrams from no peer's address: dropped unopened
        self.received = [0] * len(config.addresses)
        self.last_bad_packet = ""
        # what the metrics show of this loop (hacluster.node.measure: O(1) to record)
        self.measured = {name: Samples() for name in MEASURED}
        self.commits = 0  # liveset commits seen here
        self.failures = 0  # hosts those commits removed as failed (not those that left)
        self._fault_since: float | None = None  # left NORMAL then (a fault handler runs)
        self.last_fault = FaultTimeline(time.time)
        self.heartbeat_gaps: dict[tuple[int, int], Samples] = {}  # (network, peer)
        self._last_beat: dict[tuple[int, int], float] = {}
        self.stopped = False  # fenced: the core is trusted no further
        self.in_rule2 = False
        self.loop = _same_kind_of_loop()
        self.sockets = HeartbeatSockets(self.loop, config.addresses, self._heartbeats,
                                        self._batch_interval)
        self._main: asyncio.AbstractEventLoop | None = None
        self._node: NodeSide | None = None
        self._timer: asyncio.Handle | None = None  # the core's next Tick
        self._timer_at = 0.0  # when it was asked for
        self._in_batch = False  # handing a batch of heartbeats to the core
        self._wake: float | None = None  # the core's wakeup, asked during a batch
        self._systemd_timer: asyncio.TimerHandle | None = None
        self._io: asyncio.Queue[WriteSlot | ReadSlots] | None = None
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)
        self._tasks = Supervisor(log.write, self._critical_exit)
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._done: asyncio.Event | None = None

    # ------------------------------------------------------------ the thread
    async def start(self, node: NodeSide) -> None:
        """Bind the heartbeat sockets and run the loop; errors (a port in use) raise here."""
        self._main = asyncio.get_running_loop()
        self._node = node
        self._thread.start()
        await asyncio.wrap_future(self._started)

    def _run(self) -> None:
        name_os_thread("liveness")
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.sockets.close()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _serve(self) -> None:
        self._done = asyncio.Event()
        self._io = asyncio.Queue()
        try:
            self.sockets.open()
        except BaseException as error:
            self._started.set_exception(error)
            return
        self._tasks.spawn(self._storage_worker(), "storage worker", critical=True)
        self._report_status()
        self._pet_systemd()
        self._started.set_result(None)
        await self._done.wait()
        if self._systemd_timer is not None:
            self._systemd_timer.cancel()
        self._tasks.cancel_all()

    def stop(self) -> None:
        """End the loop and its thread (the daemon is exiting)."""
        if self._done is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._done.set)
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the liveness loop; await its result from the main loop."""
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the liveness loop soon; never waits."""
        self.loop.call_soon_threadsafe(callback)

    def _tell(self, callback: Callable[[], None]) -> None:
        """Post ``callback`` to the main loop; never waits (it may be busy)."""
        assert self._main is not None
        with contextlib.suppress(RuntimeError):  # the main loop already closed
            self._main.call_soon_threadsafe(callback)

    def now(self) -> float:
        return self.loop.time()

    # ------------------------------------------------------------ asked by the main loop
    async def arm(self, generation: int, timing: Timing, armed: bool) -> None:
        """Run the core: armed with the whole pool (HA enable), else joining."""
        if self.core is not None:
            raise RuntimeError(f"HA is already running on host {self.config.index}")
        self.timing = timing
        self.storage.set_deadline(timing.io_deadline)
        self.storage.follow(generation)
        members = self._members()
        config = self.config
        took = await self.watchdog.open_device(
            device_timeout(timing, config.unsafe_watchdog_delay))
        if took is not None:
            self.log.write("watchdog-device", path=str(config.watchdog_device), timeout=took)
        previous = None if armed else await self._own_slot()
        self.core = HostCore(CoreConfig(timing, self.config.capacity, generation,
                                        self.config.mode, members=members),
                             self.config.index, self.boot, self.now(),
                             liveset=members if armed else None, previous=previous)
        last: dict[str, Any] = {} if previous is None else {
            "last_phase": previous.phase.name, "last_epoch": previous.epoch,
            "last_liveset": previous.liveset}
        self.log.write("ha-on", generation=generation, armed=armed, timeout=timing.T,
                       members=sorted(members), **last)
        self.feed(Tick(self.now()))

    async def _own_slot(self) -> Report | None:
        """My slot before this boot writes it: my last boot's report, which a
        cold start needs (read on the storage thread, within the I/O deadline)."""
        slots, _, _ = await self.storage.read()
        content = None if slots is None else slots.get(self.config.index)
        return content if isinstance(content, Report) else None

    def _members(self) -> HostSet:
        """The roster's members, without this host if its index is another's now."""
        me = self.config.index
        if not self.roster.holds(me, self.config.my_uuid):
            return self.roster.members - {me}
        return self.roster.members

    def use(self, roster: Roster) -> None:
        """Start from ``roster`` (before the loop runs)."""
        self.roster = roster
        self.peer_hosts = self._peer_hosts()

    def _peer_hosts(self) -> list[frozenset[str]]:
        return [self.roster.peer_hosts(self.config.index, n)
                for n in range(len(self.config.addresses))]

    def adopt(self, table: MemberTable) -> None:
        """A member table newer than the roster: the pool's hosts changed."""
        if table.version <= self.roster.version:
            return
        try:
            roster = Roster.from_table(table, len(self.config.addresses))
        except MembersError as error:
            self.log.write("warning", text=f"member table {table.version} refused: {error}")
            return
        self.roster = roster
        self.peer_hosts = self._peer_hosts()
        members = self._members()
        self.log.write("members", version=roster.version, members=sorted(members))
        if self.core is not None:
            self.feed(MembersChanged(self.now(), members))
        node = self._node
        assert node is not None
        self._tell(lambda: node.members_changed(roster))

    async def rekey(self, keys: KeyRing) -> None:
        """Seal heartbeats and slots with ``keys``' current key, open with either."""
        self.sealer = Sealer.for_heartbeats(keys, self.config.capacity)
        self.storage.rekey(keys)
        self.log.write("pool-key", keys=len(keys.keys),
                       step="retired" if keys.other is None else
                       "accepting" if keys.next is not None else "switched")

    def shut_down(self) -> None:
        """A clean stop of HA here (posted): announced excluded, never a failure."""
        self.post(lambda: self.feed(Shutdown(self.now())))

    def fence_if_armed(self, why: str) -> None:
        """A part of the node it cannot run without ended (posted from the main loop)."""
        self.post(lambda: self.fence(why) if self._armed() else None)

    def _armed(self) -> bool:
        return self.core is not None and self.core.armed and not self.stopped

    async def snapshot(self) -> dict[str, Any]:
        """The liveness side of the node's status, taken on this loop."""
        common: dict[str, Any] = {"received_per_network": list(self.received),
                                  "timeout": self.timing.T,
                                  "last_bad_packet": self.last_bad_packet,
                                  # copies: the main loop sorts them (Node.status)
                                  "measured": {k: v.copy() for k, v in self.measured.items()},
                                  "commits": self.commits, "failures": self.failures,
                                  "last_fault": self.last_fault.view(),
                                  "heartbeat_gaps": {f"{peer}/{network}": gaps.copy()
                                                     for (network, peer), gaps
                                                     in self.heartbeat_gaps.items()}}
        if self.watchdog.device is not None:
            common["watchdog_device"] = self.watchdog.device.status()
        core = self.core
        if core is None:
            return {**common, "phase": "HA_OFF", "armed": False, "master": False,
                    "liveset": [], "hbdomain": [], "sfdomain": [], "rule2": False,
                    "last_beat_age": {}, "last_slot_age": {}, "dropped": self._dropped()}
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
            "members": sorted(core.members),
            "members_version": self.roster.version,
            "waiting": [w.text for w in core.waits()],
            "last_beat_age": _ages(t, [p.last_net for p in core.peers], self.config.index),
            "last_slot_age": _ages(t, [p.slot_changed for p in core.peers], self.config.index),
            "peer_phase": {str(i): p.report.phase.name for i, p in enumerate(core.peers)
                           if i != self.config.index and p.report is not None},
            "dropped": {**core.counters.__dict__, **self._dropped()},
        }

    def _report_status(self) -> None:
        """systemd's STATUS= line (sent when it changes)."""
        core, hosts = self.core, len(self.roster.members)
        if self.stopped:
            text = status_text("FENCED", False, None, 0, hosts)
        elif core is None:
            text = status_text(None, False, None, 0, hosts)
        else:
            text = status_text(core.phase.name, core.is_master, core.master_hint,
                               len(core.liveset or ()), hosts)
        self.watchdog.systemd.set_status(text)

    def _pet_systemd(self) -> None:
        """systemd's watchdog, from this loop, every half of ``WatchdogSec=``."""
        interval = self.watchdog.systemd.pet_interval
        if interval is not None:
            self.watchdog.pet_systemd(self.now())
            self._systemd_timer = self.loop.call_later(interval, self._pet_systemd)

    def _dropped(self) -> dict[str, int]:
        return {"bad_packets": self.bad_packets, "strangers": self.strangers}

    # ------------------------------------------------------------ core driving
    def _batch_interval(self) -> float:
        """:data:`IDLE_BATCH` of a beat while this host is NORMAL (a settled pool:
        no wakeup but the core's, not one per datagram, is what lets many
        daemons share a machine); none in any other phase, where every exchange
        of a fault handler, a join or a proposal counts."""
        core = self.core
        if core is not None and core.phase is Phase.NORMAL:
            return IDLE_BATCH * self.timing.t1
        return 0.0

    def _heartbeats(self, stamp: float, batch: list[Datagram]) -> None:
        """One batch of datagrams (:mod:`hacluster.node.heartbeat_sockets`), each
        stamped ``stamp``: no later input was fed before it (:meth:`feed` flushes)."""
        hosts, received, sealer = self.peer_hosts, self.received, self.sealer
        self._in_batch = True  # the timer and the status: once per batch
        try:
            for network, data, host in batch:
                if host not in hosts[network]:
                    self.strangers += 1
                    continue
                received[network] += 1
                try:
                    report = sealer.open(data)
                except DecodeError as error:
                    self.bad_packets += 1
                    self.last_bad_packet = str(error)
                    continue
                self._gap(network, report.sender, stamp)
                self.feed(HeartbeatReceived(stamp, report))
        finally:
            self._in_batch = False
        if self._wake is not None:
            at, self._wake = self._wake, None
            self.wake_at(at)
        self._report_status()

    def last_beats(self, index: int) -> list[float | None]:
        """When host ``index``'s last heartbeat arrived on each network (this loop's
        time; None: never). Safe from another thread: one dict lookup per network."""
        return [self._last_beat.get((network, index))
                for network in range(len(self.config.addresses))]

    def _gap(self, network: int, sender: int, stamp: float) -> None:
        """The time since ``sender``'s previous heartbeat on ``network``, as the core
        sees it (batches stamped at their drain), for the margins."""
        key = (network, sender)
        previous = self._last_beat.get(key)
        self._last_beat[key] = stamp
        if previous is not None and stamp > previous:
            gaps = self.heartbeat_gaps.get(key)
            if gaps is None:
                gaps = self.heartbeat_gaps[key] = Samples(GAP_WINDOW)
            gaps.add(stamp - previous)

    def feed(self, event: Input) -> None:
        if self.stopped or self.core is None:
            return
        if not isinstance(event, HeartbeatReceived):
            self.sockets.flush()  # the batch under way is older than this input
        outputs = handle_or_fence(self.core, event, self.fence)
        if outputs is not None:
            carry_out(outputs, self)
        if not self._in_batch:
            self._report_status()

    async def _storage_worker(self) -> None:
        assert self._io is not None
        while True:
            request = await self._io.get()
            asked = self.now()
            if isinstance(request, WriteSlot):
                ok, error = await self.storage.write(request.report)
                self.measured["slot_write"].add(self.now() - asked)
                self.feed(SlotWritten(self.now(), ok, error))
            else:
                slots, table, error = await self.storage.read()
                self.measured["slot_read"].add(self.now() - asked)
                self.feed(SlotsRead(self.now(), slots, error))
                if table is not None:
                    self.adopt(table)

    def _critical_exit(self, why: str) -> None:
        if self._armed():
            self.fence(why)

    # ------------------------------------------------------------ effects.Effects
    def send_heartbeat(self, report: Report, to: HostSet) -> None:
        self._broadcast(self.sealer.seal(report), to)

    def request_io(self, request: WriteSlot | ReadSlots) -> None:
        assert self._io is not None
        self._io.put_nowait(request)

    def pet_watchdog(self, which: Watchdog, timeout: float) -> None:
        self.watchdog.pet(which, timeout + self.config.unsafe_watchdog_delay, self.now())

    def fence(self, reason: str) -> None:
        assert self.core is not None
        if self.stopped:
            return
        self.stopped = True
        self.log.write("fence", sync=True, reason=reason)
        self.kill_vms()  # its VMs die before its last words say it fenced
        last_words = self.core.fenced_report()
        with contextlib.suppress(Exception):
            self._broadcast(self.sealer.seal(last_words), self.roster.others(self.config.index))
            self.storage.write_last_words(last_words)
        self.watchdog.fence()
        self._report_status()
        node = self._node
        assert node is not None
        self._tell(node.fenced)
        self.loop.call_later(EXIT_GRACE, os._exit, FENCED_EXIT)

    def disarmed(self, reason: str) -> None:
        self.watchdog.disarm()
        self.log.write("disarmed", reason=reason)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.core = None  # HA off here; what becomes of the VMs is the node's call
        self._report_status()
        assert self._node is not None
        self._tell(self._node.ha_disarmed)

    def liveset_committed(self, commit: LivesetCommitted) -> None:
        self.commits += 1
        self.failures += len(commit.removed - commit.excluded)
        self.last_fault.step(f"commit: liveset {sorted(commit.liveset)}, removed "
                             f"{sorted(commit.removed)}, added {sorted(commit.added)}")
        self.log.write("commit", liveset=commit.liveset, removed=commit.removed,
                       added=commit.added, left=commit.excluded)
        node = self._node
        assert node is not None
        self._tell(lambda: node.committed(commit))

    def master_gained(self) -> None:
        self.log.write("master", gained=True)
        assert self._node is not None
        self._tell(self._node.master_gained)

    def master_lost(self, reason: str) -> None:
        self.log.write("master", gained=False, reason=reason)
        assert self._node is not None
        self._tell(self._node.master_lost)

    def phase_changed(self, change: PhaseChanged) -> None:
        self.log.write("phase", old=change.old.name, new=change.new.name, why=change.why)
        text = f"{change.old.name} -> {change.new.name}: {change.why}"
        if change.old is Phase.NORMAL:
            self._fault_since = self.now()
            self.last_fault.began(text)
        elif change.new is Phase.NORMAL and self._fault_since is not None:
            self.measured["fault_handler"].add(self.now() - self._fault_since)
            self._fault_since = None
            self.last_fault.end(text)
        else:
            self.last_fault.step(text)
        self.loop.call_soon(self.sockets.pace)  # polled while NORMAL, else read at once
        rule2 = self.core is not None and self.core.rule2
        if rule2 and not self.in_rule2:
            assert self._node is not None
            self._tell(self._node.entered_rule2)
        self.in_rule2 = rule2

    def suspect(self, host: int, channel: str) -> None:
        self.log.write("suspect", peer=host, channel=channel)

    def waiting(self, waits: tuple[Wait, ...]) -> None:
        self.log.write("waiting", waits=[w.text for w in waits])

    def wake_at(self, at: float) -> None:
        if self._in_batch:
            self._wake = at  # set once, when the batch is done
            return
        if self._timer is not None:
            if self._timer_at == at:
                return
            self._timer.cancel()
            self._timer = None
        if at != float("inf"):
            self._timer, self._timer_at = self.loop.call_at(at, self._tick), at

    def _tick(self) -> None:
        self._timer = None
        now = self.now()
        self.measured["liveness_lag"].add(max(0.0, now - self._timer_at))
        self.feed(Tick(now))

    def _broadcast(self, packet: bytes, peers: frozenset[int]) -> None:
        """Send on every heartbeat network: the copies after the first are stale."""
        send, networks = self.sockets.send, range(len(self.sockets.sockets))
        for peer in peers:
            for network, address in zip(networks, self.roster.addresses.get(peer, ()),
                                        strict=False):
                send(packet, network, address.host, address.port)


def _ages(now: float, seen: list[float], me: int) -> dict[str, float]:
    """Seconds since each peer (by index, as a string) was last seen; never-seen ones left out."""
    return {str(i): round(now - at, 3) for i, at in enumerate(seen)
            if i != me and at != float("-inf")}


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
