"""Latency of one 4 KiB SR block write and read: a plain file beside an iSCSI LUN.

Every figure is the SR's own I/O (:class:`hacluster.storage.sr.BlockDevice`:
``O_DIRECT | O_DSYNC``, one aligned block), at seeded random blocks of the
4 MiB heartbeat region, each write followed by a read of the same block.
The media, measured in turns (``--rounds``) so that a busy machine weighs on
all of them alike, each backed by a file on the same filesystem:

* ``plain file``: the file itself, as the local lab's SR;
* ``NBD + FUSE``: nbdkit's file plugin exported through nbdfuse (the FUSE and
  NBD hops of the iSCSI chain without iSCSI);
* ``iSCSI``: a tgt target serving the file, QEMU's libiscsi initiator
  (qemu-nbd) and nbdfuse, as ``hacluster lab up --sr iscsi`` gives each host
  (:mod:`hacluster.lab.iscsi`).

The chains need root and their programs; without them only the plain file is
measured and the reason is printed. Prints a Markdown table with the command
that produced it. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from hacluster.lab import iscsi
from hacluster.storage.sr import BLOCK, HEARTBEAT_REGION, BlockDevice

BLOCKS = HEARTBEAT_REGION // BLOCK


@contextlib.contextmanager
def media(scratch: Path, chains: bool) -> Iterator[dict[str, Path]]:
    """The files to measure, by name; the chains are torn down on exit."""
    found: dict[str, Path] = {}
    for name in ("plain", "nbd", "iscsi"):
        with (scratch / f"{name}.img").open("wb") as backing:
            backing.write(b"\1" * HEARTBEAT_REGION)  # allocated, as a formatted SR is
    found["plain file"] = scratch / "plain.img"
    pids: list[tuple[Path, int]] = []
    targets: list[iscsi.Target] = []
    try:
        if chains:
            if shutil.which("nbdkit"):
                mount = scratch / "nbd.d"
                found["NBD + FUSE"] = iscsi.mount_nbd(
                    ["nbdkit", "file", str(scratch / "nbd.img"), "cache=none"], mount,
                    scratch / "nbd.out", lambda pid: pids.append((mount, pid)), "nbdkit")
            else:
                print("NBD + FUSE not measured: needs nbdkit (package nbdkit)")
            target = iscsi.start_target(scratch / "iscsi.img", scratch / "tgtd.out",
                                        targets.append)
            mount = scratch / "iscsi.d"
            found["iSCSI"] = iscsi.attach(target, mount, f"{target.iqn}-bench",
                                          scratch / "iscsi.out",
                                          lambda pid: pids.append((mount, pid)))
        yield found
    finally:
        for mount, pid in pids:
            iscsi.detach(mount, pid)
        for target in targets:
            iscsi.stop_target(target)


def measure(device: BlockDevice, ops: int, rng: random.Random,
            writes: list[float], reads: list[float]) -> None:
    block = bytearray(rng.randbytes(BLOCK))
    for n in range(ops):
        offset = BLOCK * rng.randrange(BLOCKS)
        block[:8] = n.to_bytes(8, "big")
        started = time.perf_counter_ns()
        device.write(offset, bytes(block))
        written = time.perf_counter_ns()
        device.read(offset)
        writes.append((written - started) / 1000)
        reads.append((time.perf_counter_ns() - written) / 1000)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=3000, help="writes (and reads) per medium")
    parser.add_argument("--rounds", type=int, default=6, help="turns the ops are split into")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help="scratch directory (default: a new one in /var/tmp)")
    args = parser.parse_args(argv)
    if args.ops < args.rounds or args.rounds < 1:
        parser.error("--ops must be at least --rounds, and --rounds at least 1")
    print(f"command: python tools/bench_sr_latency.py --ops {args.ops} --rounds {args.rounds} "
          f"--seed {args.seed}")
    lacking = iscsi.missing()
    if lacking:
        print("chains not measured: they need " + ", ".join(lacking))
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        scratch = Path(args.dir) if args.dir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(dir="/var/tmp")))
        scratch.mkdir(parents=True, exist_ok=True)
        found = stack.enter_context(media(scratch, chains=not lacking))
        devices = {name: BlockDevice(path) for name, path in found.items()}
        for device in devices.values():
            stack.callback(device.close)
        figures: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in devices}
        for _ in range(args.rounds):
            for name, device in devices.items():
                measure(device, args.ops // args.rounds, rng, *figures[name])
    print(f"\n{args.ops // args.rounds * args.rounds} writes and reads of one 4 KiB block "
          "per medium, in microseconds\n")
    print("| medium | O_DIRECT | write p50 | write p99 | read p50 | read p99 |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (writes, reads) in figures.items():
        print(f"| {name} | {'yes' if devices[name].direct else 'no'} "
              f"| {statistics.median(writes):.0f} | {percentile(writes, 0.99):.0f} "
              f"| {statistics.median(reads):.0f} | {percentile(reads, 0.99):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
