"""The receive path of one heartbeat: microseconds per packet, open + decode + core.

For each pool size it builds the heartbeats of a settled pool (statefile mode,
every host NORMAL with the whole pool as its liveset, hbdomain and sfdomain:
full bitmaps; sighting ages drawn from a seeded ``random.Random``), seals them
as :class:`hacluster.wire.codec.Sealer` does, and measures on host 0, in one
run and on the same packets:

* **open**: the AEAD alone (ChaCha20-Poly1305 over the body, with the ring's
  keys), as :meth:`Sealer.open` does it before decoding;
* **decode**: the body to a :class:`~hacluster.core.messages.Report`
  (bounded msgpack and the strict checks), in steady state (a sealer that has
  opened the previous beats of every sender) and at **first sight** (a sealer
  that never saw these views);
* **core**: :meth:`HostCore.handle` of one ``HeartbeatReceived``, amortised
  over a beat: time advances by ``t1`` per round of ``hosts - 1`` packets, so
  the steps due every beat (domains, lock, the report it sends) run inside it;
  the core's slot I/O is answered between rounds, untimed.

Each figure is CPU time (``time.process_time``: other jobs on the machine
are not counted), the best of ``--repeat`` runs (the mean per packet of each
run). ``--against REV`` measures the same packets with the code of git
revision ``REV`` too (this script run on ``git archive REV`` in a subprocess)
and prints both side by side. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hacluster.core.events import (
    HeartbeatReceived,
    Output,
    ReadSlots,
    SlotsRead,
    SlotWritten,
    Suspect,
    WriteSlot,
)
from hacluster.core.messages import Phase, Report
from hacluster.core.node import CoreConfig, HostCore, Mode
from hacluster.core.timing import Timing
from hacluster.wire import codec
from hacluster.wire.codec import Sealer
from hacluster.wire.keys import aead

_clock = time.process_time  # CPU time: what other jobs on the machine take is not counted
TIMEOUT = 10.0
GENERATION = 0x5EED
FIRST_SIGHT_PACKETS = 200
ME = 0


@dataclass(frozen=True)
class Row:
    hosts: int
    packets: int
    open_us: float
    decode_us: float
    first_sight_us: float
    core_us: float
    settled: bool  # the receiver stayed NORMAL with the whole pool and suspected nobody

    @property
    def total_us(self) -> float:
        return self.open_us + self.decode_us + self.core_us


def rounds_for(hosts: int, packets: int) -> int:
    """Rounds (one beat of every peer each) so that about ``packets`` are measured."""
    return max(4, -(-packets // max(1, hosts - 1)))


def pool_reports(hosts: int, rounds: int, seed: int, timing: Timing) -> list[list[Report]]:
    """Round by round, the report every peer of host 0 sends in a settled pool."""
    rng = random.Random(seed)
    everyone = frozenset(range(hosts))
    rounds_out = []
    for r in range(rounds):
        beat = []
        for sender in range(hosts):
            if sender == ME:
                continue
            ages = tuple(-1 if h == sender else rng.randrange(int(timing.t1 * 1000))
                         for h in range(hosts))
            slot_ages = tuple(-1 if h == sender else rng.randrange(int(timing.t2 * 2000))
                              for h in range(hosts))
            beat.append(Report(
                generation=GENERATION, sender=sender, boot=1, seq=2 * r + 1,
                phase=Phase.NORMAL, liveset=everyone, hbdomain=everyone, sfdomain=everyone,
                statefile_access=True, lock_request=True, lock_grant=0, epoch=1,
                hb_age_ms=ages, sf_age_ms=slot_ages))
        rounds_out.append(beat)
    return rounds_out


def open_aead(sealer: Sealer, data: bytes) -> bytes:
    """The AEAD part of :meth:`Sealer.open` (header checks and decryption)."""
    header_end = len(codec.MAGIC) + 1
    nonce, sealed, header = data[header_end:codec.HEADER], data[codec.HEADER:], data[:header_end]
    body: bytes = sealer.ring.open_with(
        sealer.purpose, lambda key: aead(key).decrypt(nonce, sealed, header), Exception)
    return body


def decode(sealer: Sealer, body: bytes) -> Report:
    """The decoding part of :meth:`Sealer.open`: this tree's, whatever its version."""
    decoder = getattr(sealer, "decode", None)
    if decoder is not None:
        report: Report = decoder(body)
        return report
    from hacluster.wire.unpack import unpack  # the first versions: no Sealer.decode
    fields = unpack(body, codec.MAX_SEALED, items=2 * codec.MAX_HOSTS)
    return codec.report_from_fields(fields, sealer.hosts)


def _settled(outputs: list[Output], core: HostCore, hosts: int) -> bool:
    return (core.phase is Phase.NORMAL and core.liveset == frozenset(range(hosts))
            and not any(isinstance(o, Suspect) for o in outputs))


def measure_once(hosts: int, seed: int, packets: int) -> Row:
    timing = Timing.derive(TIMEOUT)
    key = bytes(random.Random(seed).getrandbits(8) for _ in range(32))
    sender = Sealer.for_heartbeats(key, hosts)
    rounds = pool_reports(hosts, rounds_for(hosts, packets), seed, timing)
    sealed = [[sender.seal(r) for r in beat] for beat in rounds]
    receiver = Sealer.for_heartbeats(key, hosts)
    opened = [[open_aead(receiver, p) for p in beat] for beat in sealed]
    for beat in opened[:1]:  # warm-up: the first beat of each sender is first sight
        for body in beat:
            decode(receiver, body)

    measured = [p for beat in sealed[1:] for p in beat]
    start = _clock()
    for p in measured:
        open_aead(receiver, p)
    open_s = _clock() - start

    bodies = [b for beat in opened[1:] for b in beat]
    start = _clock()
    for body in bodies:
        decode(receiver, body)
    decode_s = _clock() - start

    firsts = bodies[:FIRST_SIGHT_PACKETS]
    fresh = [Sealer.for_heartbeats(key, hosts) for _ in firsts]
    start = _clock()
    for s, body in zip(fresh, firsts, strict=True):
        decode(s, body)
    first_s = _clock() - start

    config = CoreConfig(timing, hosts, GENERATION, Mode.STATEFILE)
    now = 1000.0
    core = HostCore(config, ME, boot=1, now=now, liveset=frozenset(range(hosts)))
    reports = [[decode(receiver, b) for b in beat] for beat in opened]
    step = timing.t1 / len(reports[0]) if reports[0] else timing.t1
    settled, pending_io, core_s, counted = True, None, 0.0, 0
    for r, received in enumerate(reports):
        events = [HeartbeatReceived(now + i * step, report)
                  for i, report in enumerate(received)]
        outputs: list[Output] = []
        start = _clock()
        for event in events:
            outputs.extend(core.handle(event))
        elapsed = _clock() - start
        if r > 0:
            core_s += elapsed
            counted += len(events)
        now += timing.t1
        writes = [o for o in outputs if isinstance(o, WriteSlot)]
        if writes or pending_io is not None:
            pending_io = writes[-1].report if writes else pending_io
        if any(isinstance(o, ReadSlots) for o in outputs):
            assert pending_io is not None
            slots = {report.sender: report for report in received} | {ME: pending_io}
            outputs += core.handle(SlotWritten(now - step, ok=True))
            outputs += core.handle(SlotsRead(now - step, slots))
            pending_io = None
        settled = settled and _settled(outputs, core, hosts)

    n = len(measured)
    return Row(hosts=hosts, packets=n, open_us=1e6 * open_s / n, decode_us=1e6 * decode_s / n,
               first_sight_us=1e6 * first_s / max(1, len(firsts)),
               core_us=1e6 * core_s / max(1, counted), settled=settled)


def measure(hosts: int, seed: int, packets: int = 2000, repeat: int = 3) -> Row:
    """The best of ``repeat`` runs of :func:`measure_once`, figure by figure."""
    runs = [measure_once(hosts, seed, packets) for _ in range(max(1, repeat))]
    return Row(hosts=hosts, packets=runs[0].packets,
               open_us=min(r.open_us for r in runs), decode_us=min(r.decode_us for r in runs),
               first_sight_us=min(r.first_sight_us for r in runs),
               core_us=min(r.core_us for r in runs), settled=all(r.settled for r in runs))


def table(rows: Sequence[Row], before: Sequence[Row] | None = None) -> str:
    if before is None:
        lines = ["| hosts | packets | open µs | decode µs | decode, first sight µs | core µs "
                 "| open + decode + core µs |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r.hosts} | {r.packets} | {r.open_us:.1f} | {r.decode_us:.1f} "
                         f"| {r.first_sight_us:.1f} | {r.core_us:.1f} | {r.total_us:.1f} |")
        return "\n".join(lines)
    lines = ["| hosts | open µs before → after | decode µs before → after "
             "| decode, first sight µs before → after | core µs before → after "
             "| total µs before → after |", "|---:|---:|---:|---:|---:|---:|"]
    for b, r in zip(before, rows, strict=True):
        lines.append(
            f"| {r.hosts} | {b.open_us:.1f} → {r.open_us:.1f} | {b.decode_us:.1f} → "
            f"{r.decode_us:.1f} | {b.first_sight_us:.1f} → {r.first_sight_us:.1f} "
            f"| {b.core_us:.1f} → {r.core_us:.1f} | {b.total_us:.1f} → {r.total_us:.1f} |")
    return "\n".join(lines)


def measure_revision(rev: str, argv: Sequence[str]) -> list[Row]:
    """The same measurement with the code of git revision ``rev`` (in a subprocess)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "-C", str(root), "archive", rev, "hacluster"],
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
        env = {**os.environ, "PYTHONPATH": tree}
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--json"],
                             check=True, capture_output=True, text=True, env=env, cwd=tree)
    return [Row(**json.loads(line)) for line in out.stdout.splitlines() if line.startswith("{")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hosts", default="16,64,256", help="comma-separated pool sizes")
    parser.add_argument("--packets", type=int, default=2000, help="packets measured per size")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (best kept)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--against", metavar="REV",
                        help="also measure the code of git revision REV, side by side")
    parser.add_argument("--json", action="store_true", help="one JSON object per size")
    args = parser.parse_args(argv)
    sizes = [int(h) for h in args.hosts.split(",")]
    if min(sizes) < 2 or max(sizes) > codec.MAX_HOSTS:
        parser.error(f"pool sizes are 2 to {codec.MAX_HOSTS}")
    before: list[Row] | None = [] if args.against else None
    rows = []
    for hosts in sizes:  # each size before, then after: the machine's load varies
        if args.against and before is not None:
            before += measure_revision(args.against, [
                "--hosts", str(hosts), "--packets", str(args.packets),
                "--repeat", str(args.repeat), "--seed", str(args.seed)])
        rows.append(measure(hosts, args.seed, args.packets, args.repeat))
        if args.json:
            print(json.dumps(asdict(rows[-1])), flush=True)
        else:
            print(f"measured {hosts} hosts", file=sys.stderr, flush=True)
    if args.json:
        return 0
    print("command: python tools/bench_receive.py " + " ".join(argv or sys.argv[1:]))
    print(f"seed: {args.seed}")
    if before is not None:
        print(f"before: {args.against}, after: this tree")
    print(table(rows, before))
    if not all(r.settled for r in rows):
        print("warning: the receiving core did not stay settled: figures are not of a "
              "settled pool")
    return 0


if __name__ == "__main__":
    sys.exit(main())
