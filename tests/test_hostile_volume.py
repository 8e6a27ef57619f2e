"""A hostile or damaged shared volume: replayed slots, a rolled-back redo log, a failing backup.

The attacker can write the heartbeat SR (the LUN is shared) but has no pool
key: it can only zero blocks and write back old, genuine ones. Everything
here runs on real SR files through the real sealing, redo-log and database
code; the liveness cores are the real :class:`HostCore`, driven on a
simulated clock (deterministic: no wall-clock assertions).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from pathlib import Path

from hacluster.core.events import (
    Fence,
    HeartbeatReceived,
    Input,
    LivesetCommitted,
    Output,
    ReadSlots,
    SendHeartbeat,
    SlotsRead,
    SlotWritten,
    Tick,
    Wakeup,
    WriteSlot,
)
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.timing import Timing
from hacluster.sim.checker import restart_bound
from hacluster.storage.sr import (
    BLOCK,
    BlockDevice,
    decode_slot,
    encode_slot,
    format_sr,
    slot_offset,
)
from hacluster.wire.codec import Sealer, new_pool_key

KEY = new_pool_key()
GENERATION = 12
T = 5.0
LATENCY = 0.002  # one way, network and volume alike


class VolumePool:
    """Real cores of a statefile-mode pool whose slots live in a real SR file."""

    def __init__(self, sr: Path, hosts: int = 3) -> None:
        self.device = BlockDevice(sr)
        self.sealer = Sealer.for_slots(KEY, hosts)
        self.hosts = hosts
        config = CoreConfig(Timing.derive(T), hosts, GENERATION)
        everyone = frozenset(range(hosts))
        self.cores = {i: HostCore(config, i, boot=1, now=0.0, liveset=everyone)
                      for i in range(hosts)}
        self.timing = config.timing
        self.queue: list[tuple[float, int, int, Input]] = []
        self.order = itertools.count()
        self.wakeups: dict[int, float] = {}
        self.commits: list[tuple[float, int, LivesetCommitted]] = []
        self.fenced: list[int] = []
        self.now = 0.0
        for host in self.cores:
            self.wakeups[host] = 0.0
            self._push(0.0, host, Tick(0.0))

    def crash(self, host: int) -> None:
        del self.cores[host]

    def run_until(self, end: float, every: float = math.inf,
                  action: Callable[[], None] = lambda: None) -> None:
        """Deliver everything due before ``end``; call ``action()`` every ``every`` s."""
        next_action = self.now if every < math.inf else end
        while self.queue and self.queue[0][0] < end:
            if self.queue[0][0] >= next_action:
                self.now = next_action
                action()
                next_action += every
                continue
            at, _, host, event = heapq.heappop(self.queue)
            self.now = at
            core = self.cores.get(host)
            if core is None or (isinstance(event, Tick) and self.wakeups.get(host) != at):
                continue
            self._carry_out(host, core.handle(event))

    def _push(self, at: float, host: int, event: Input) -> None:
        heapq.heappush(self.queue, (at, next(self.order), host, event))

    def _carry_out(self, host: int, outputs: list[Output]) -> None:
        now = self.now
        for output in outputs:
            if isinstance(output, SendHeartbeat):
                for peer in output.to:
                    if peer != host:
                        self._push(now + LATENCY, peer,
                                   HeartbeatReceived(now + LATENCY, output.report))
            elif isinstance(output, WriteSlot):
                block = encode_slot(self.sealer, output.report)
                self.device.write(slot_offset(output.report.sender), block)
                self._push(now + LATENCY, host, SlotWritten(now + LATENCY, True))
            elif isinstance(output, ReadSlots):
                slots = {i: decode_slot(self.sealer, self.device.read(slot_offset(i)), i)
                         for i in range(self.hosts)}
                self._push(now + LATENCY, host, SlotsRead(now + LATENCY, slots))
            elif isinstance(output, LivesetCommitted):
                self.commits.append((now, host, output))
            elif isinstance(output, Fence):
                self.fenced.append(host)
                del self.cores[host]
                return
            elif isinstance(output, Wakeup):
                self.wakeups[host] = output.at
                self._push(output.at, host, Tick(output.at))

    def close(self) -> None:
        self.device.close()


def test_replayed_old_slot_images_do_not_keep_a_crashed_host_alive(tmp_path: Path) -> None:
    """Two older, genuinely sealed images of a crashed host's slot, written back in
    turn by someone with write access and no key, must not delay the failover."""
    sr = tmp_path / "heartbeat.sr"
    format_sr(sr, hosts=3, key=KEY, generation=GENERATION, metadata=BLOCK * 16)
    pool = VolumePool(sr)
    attacker = BlockDevice(sr)
    try:
        images = []
        for at in (3 * T, 3 * T + 1.0):  # the attacker copies host 2's slot twice
            pool.run_until(at)
            images.append(attacker.read(slot_offset(2)))
        assert images[0] != images[1]
        pool.run_until(4 * T)
        assert pool.commits == [] and pool.fenced == []  # a healthy pool so far
        crashed_at = pool.now
        pool.crash(2)
        replays = itertools.cycle(images)
        pool.run_until(crashed_at + 4 * T, every=pool.timing.t2,
                       action=lambda: attacker.write(slot_offset(2), next(replays)))
        removed = [(at, host) for at, host, c in pool.commits if c.removed == {2}]
        assert sorted(host for _, host in removed) == [0, 1], pool.commits
        bound = restart_bound(pool.timing)
        assert all(at - crashed_at <= bound for at, _ in removed), (removed, bound)
        assert pool.fenced == []
        for host in (0, 1):
            assert pool.cores[host].counters.stale > 0  # the replays were seen and dropped
    finally:
        attacker.close()
        pool.close()
