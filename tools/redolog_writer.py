"""A redo log writer process for the SIGKILL durability test (tests/storage/test_redolog.py).

Rules:

* It loads the redo log of the region, prints ``loaded <generation>`` (or
  ``loaded none`` on a fresh region, then writes snapshot 0 and prints
  ``ack 0``), and appends consecutive deltas until ``--deltas`` are written
  or it is killed.
* It prints ``ack <generation>``, flushed, only after ``append`` (or
  ``write_snapshot``) has returned: every acknowledged generation must
  survive a SIGKILL at any point.
* With ``--pause-every N`` it idles :data:`PAUSE` seconds after every N-th
  ack, so a kill at a random time often lands just after an ack, before the
  next write: the moment a record acknowledged too early would be lost.
* Payloads are a function of the generation alone (:func:`delta_payload`,
  :func:`snapshot_payload`), so the test checks the loaded bytes exactly.
  Some deltas span several blocks, so records cross block boundaries and the
  halves roll over often in a small region.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from hacluster.storage.redolog import RedoLog
from hacluster.storage.sr import BLOCK, BlockDevice

MULTI_BLOCK_EVERY = 5
PAUSE = 0.0005


def _text(label: str, generation: int, size: int) -> bytes:
    unit = f"{label} {generation};".encode()
    return (unit * (size // len(unit) + 1))[:size]


def delta_payload(generation: int) -> bytes:
    """Delta ``generation``: short, or every few generations, over two blocks."""
    multi_block = generation % MULTI_BLOCK_EVERY == 0
    size = 2 * BLOCK + 300 if multi_block else 40 + generation % 900
    return _text("delta", generation, size)


def snapshot_payload(generation: int) -> bytes:
    """The full state at ``generation``: a little over one block."""
    return _text("state", generation, BLOCK + 100 + generation % 50)


def run(path: Path, key: bytes, start: int, size: int, deltas: int, pause_every: int) -> None:
    device = BlockDevice(path)
    log = RedoLog(device, key, start, size)
    loaded = log.load()
    print(f"loaded {'none' if loaded is None else loaded.generation}", flush=True)
    if loaded is None:
        log.write_snapshot(0, snapshot_payload(0))
        print("ack 0", flush=True)
    generation = 0 if loaded is None else loaded.generation
    for next_generation in range(generation + 1, generation + 1 + deltas):
        log.append(next_generation, delta_payload(next_generation),
                   partial(snapshot_payload, next_generation))
        print(f"ack {next_generation}", flush=True)
        if pause_every and next_generation % pause_every == 0:
            time.sleep(PAUSE)
    device.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the file holding the region")
    parser.add_argument("--key-file", type=Path, required=True, help="the pool key, raw bytes")
    parser.add_argument("--start", type=int, required=True, help="region offset in bytes")
    parser.add_argument("--size", type=int, required=True, help="region size in bytes")
    parser.add_argument("--deltas", type=int, default=1000, help="deltas to append, at most")
    parser.add_argument("--pause-every", type=int, default=0, metavar="N",
                        help=f"idle {PAUSE} s after every N-th ack (0: never)")
    args = parser.parse_args(argv)
    run(args.path, args.key_file.read_bytes(), args.start, args.size, args.deltas,
        args.pause_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
