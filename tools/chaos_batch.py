"""A batch of seeded chaos runs, each judged again from its directory, and their summary.

Rules:

* ``--seeds`` takes ranges and comma lists (``1-20``, ``7,90210``), and may be
  given more than once. Bad syntax, an empty range, a seed given twice, an
  option ``hacluster chaos`` would refuse, or a lab still up in a seed's
  directory is bad input: exit 2 before anything runs.
* Seed N runs as its own ``python -m hacluster chaos`` process in
  ``DIR/seed-N`` (replaced if it exists), its output (stdout and stderr) in
  ``DIR/seed-N/stdout.txt``, so a run that crashes does not end the batch.
  ``--jobs`` runs that many at once. A run that outlives its time limit is
  interrupted (SIGINT, so it takes its lab down) and fails.
* After each run the checker judges it again from its directory. A seed
  passes only when its run exited 0 and that verdict has no violation; a
  run that cannot be judged fails.
* One line per seed as it finishes; then a table by seed, the totals (the
  recovery median and max are over every fault's recovery in every seed),
  and each failed seed's first violation (or why it failed) with the command
  that replays it. A run's length is its journal's, from bringing the lab up
  to the last fault's recovery: the runner injects no fault whose gap would
  pass ``--duration``, so it is often a little shorter. ``--markdown FILE``
  writes the table, the totals and the command line of the batch as Markdown.
* Exit 0 when every seed passed, 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from hacluster.chaos.checker import LAB, Verdict, check, median_max
from hacluster.chaos.command import replay, settle_limit
from hacluster.chaos.schedule import KINDS
from hacluster.cli import _positive_float, _positive_int, _timeout

OUTPUT = "stdout.txt"
HEADER = ["seed", "run", "faults", "stopped VMs", "violations", "recovery median",
          "recovery max", "wall", "result"]


def seed_list(text: str) -> list[int]:
    """The seeds of ``1-20``, ``7,90210`` or a mix of both, in order."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"bad seeds {text!r}: expected numbers and ranges like 1-20,90210")
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        if high < low:
            raise argparse.ArgumentTypeError(f"bad seeds {text!r}: empty range {part.strip()}")
        seeds += range(low, high + 1)
    return seeds


@dataclass
class Outcome:
    seed: int
    directory: Path
    code: int | None  # the exit status of ``hacluster chaos``; None: it timed out
    wall: float
    verdict: Verdict | None
    error: str = ""  # why the run could not be judged

    @property
    def problem(self) -> str | None:
        """Why this seed failed, in one line; None when it passed."""
        if self.verdict is not None and self.verdict.violations:
            return self.verdict.violations[0]
        why = []
        if self.code is None:
            why.append("timed out and was interrupted")
        elif self.code != 0:
            why.append(f"hacluster chaos exited {self.code}")
        if self.verdict is None:
            why.append(f"not judged: {self.error}")
        return f"{'; '.join(why)} (see {self.directory / OUTPUT})" if why else None

    def cells(self) -> list[str]:
        """This seed's row of the table (see :data:`HEADER`)."""
        v = self.verdict
        result = "ok" if self.problem is None else "VIOLATION" if v and v.violations else "FAILED"
        if v is None:
            return [str(self.seed), "-", "-", "-", "-", "-", "-", f"{self.wall:.0f}s", result]
        times = v.recoveries
        return [str(self.seed), f"{v.end - v.begin:.0f}s", str(len(v.faults)), str(len(times)),
                str(len(v.violations)),
                f"{statistics.median(times):.2f}s" if times else "-",
                f"{max(times):.2f}s" if times else "-", f"{self.wall:.0f}s", result]


def chaos_command(seed: int, directory: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "hacluster", "chaos", "--backend", args.backend,
            "--hosts", str(args.hosts), "--timeout", str(args.timeout),
            "--duration", str(args.duration), "--rate", str(args.rate),
            "--seed", str(seed), "--dir", str(directory)]


def time_limit(args: argparse.Namespace) -> float:
    """Generous: the duration, then settling after the first and the last fault, and more."""
    return float(args.duration) + 10 * settle_limit(args.timeout)


def judged(seed: int, directory: Path, code: int | None, wall: float) -> Outcome:
    try:
        verdict = check(directory)
    except Exception as error:  # whatever the run left, the batch goes on
        return Outcome(seed, directory, code, wall, None, f"{type(error).__name__}: {error}")
    return Outcome(seed, directory, code, wall, verdict)


def run_seed(seed: int, args: argparse.Namespace) -> Outcome:
    directory: Path = args.dir / f"seed-{seed}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    start = time.monotonic()
    code: int | None
    with (directory / OUTPUT).open("w") as out:
        child = subprocess.Popen(chaos_command(seed, directory, args), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code = child.wait(time_limit(args))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)  # the run's finally takes its lab down
            try:
                child.wait(settle_limit(args.timeout))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            code = None
    return judged(seed, directory, code, time.monotonic() - start)


def seed_line(o: Outcome) -> str:
    v = o.verdict
    if v is None:
        return f"seed {o.seed}: {o.problem}, wall {o.wall:.0f}s"
    times = v.recoveries
    recovery = f"recovery {median_max(times)}" if times else "no recovery measured"
    status = "" if o.problem is None or v.violations else f", {o.problem}"
    return (f"seed {o.seed}: {v.end - v.begin:.0f}s run, {len(v.faults)} faults, "
            f"{len(v.violations)} violations, {recovery}, wall {o.wall:.0f}s{status}")


def total_line(outcomes: Sequence[Outcome]) -> str:
    verdicts = [o.verdict for o in outcomes if o.verdict is not None]
    times = [t for v in verdicts for t in v.recoveries]
    faults = sum(len(v.faults) for v in verdicts)
    violations = sum(len(v.violations) for v in verdicts)
    recovery = (f"recovery {median_max(times)} over {len(times)} faults that stopped "
                f"protected VMs" if times else "no recovery measured")
    failed = sum(o.problem is not None for o in outcomes)
    chaos = sum(v.end - v.begin for v in verdicts)
    return (f"batch: {len(outcomes)} seeds, {chaos:.0f}s of runs, {faults} faults, "
            f"{violations} violations, {recovery}; {failed} seed(s) failed")


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.rjust(w) if i < len(HEADER) - 1 else c
                               for i, (c, w) in enumerate(zip(row, widths, strict=True)))
                     for row in rows)


def describe(args: argparse.Namespace) -> str:
    return (f"{len(args.seeds)} seeds of {args.backend} chaos, {args.hosts} hosts, "
            f"T={args.timeout}s, {args.duration:g}s at {args.rate:g}/min each, "
            f"{args.jobs} at a time, in {args.dir}")


def markdown(outcomes: Sequence[Outcome], command: str, what: str) -> str:
    lines = [f"`{command}`", "", f"{what}, on {time.strftime('%Y-%m-%d')}:", "",
             "| " + " | ".join(HEADER) + " |",
             "|" + "---:|" * (len(HEADER) - 1) + "---|"]
    lines += ["| " + " | ".join(o.cells()) + " |" for o in outcomes]
    return "\n".join([*lines, "", total_line(outcomes), ""])


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=seed_list, action="append", required=True,
                        help="seeds: ranges and comma lists, e.g. 1-20,90210 (repeatable)")
    parser.add_argument("--backend", choices=sorted(KINDS), default="netns")
    parser.add_argument("--hosts", type=_positive_int, default=5)
    parser.add_argument("--timeout", type=_timeout, default=3.0, help="HA timeout T in seconds")
    parser.add_argument("--duration", type=_positive_float, default=300.0,
                        help="seconds of faults per run")
    parser.add_argument("--rate", type=_positive_float, default=6.0, help="faults per minute")
    parser.add_argument("--jobs", type=_positive_int, default=1, help="runs at once")
    parser.add_argument("--dir", type=Path, default=Path(".hacluster-chaos-batch"),
                        help="the batch directory: one seed-N directory per seed")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the table as Markdown to FILE")
    args = parser.parse_args(argv)
    args.seeds = [seed for seeds in args.seeds for seed in seeds]
    twice = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if twice:
        parser.error(f"seed(s) given twice: {', '.join(map(str, twice))}")
    if args.hosts < 2:
        parser.error("a chaos run needs two hosts or more")
    if args.markdown is not None and not args.markdown.parent.is_dir():
        parser.error(f"--markdown: no directory {args.markdown.parent}")
    up = [args.dir / f"seed-{s}" for s in args.seeds
          if (args.dir / f"seed-{s}" / LAB / "lab.json").exists()]
    if up:
        parser.error(f"a chaos run is still up in {up[0]}: "
                     f"'hacluster lab --dir {up[0] / LAB} down' first")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = parse(words)
    command = "python tools/chaos_batch.py " + shlex.join(words)
    print(f"running {describe(args)}", flush=True)
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        running = [pool.submit(run_seed, seed, args) for seed in args.seeds]
        for future in as_completed(running):
            outcomes.append(future.result())
            print(seed_line(outcomes[-1]), flush=True)
    outcomes.sort(key=lambda o: o.seed)
    print()
    print(text_table([HEADER, *(o.cells() for o in outcomes)]))
    print()
    print(total_line(outcomes))
    failed = [o for o in outcomes if o.problem is not None]
    for o in failed:
        print(f"FAILED seed {o.seed}: {o.problem}")
        again = replay(args.backend, args.hosts, args.timeout, args.duration, args.rate, o.seed)
        print(f"  replay: {again}")
        print(f"  judge again: hacluster chaos --check {o.directory}")
    if args.markdown is not None:
        args.markdown.write_text(markdown(outcomes, command, describe(args)))
        print(f"markdown: {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
