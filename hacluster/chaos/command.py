"""``hacluster chaos``: bring up a pool, run a seeded fault schedule, judge it.

Rules:

* A run lives in one directory: the lab (``lab/``), the journal
  (``chaos.jsonl``), the report (``report.txt``) and the timeline
  (``timeline.png``). ``--check DIR`` judges a finished run again from those
  files alone.
* The lab is torn down when the run ends, however it ends (``--keep``
  leaves it up for inspection); its files stay for the checker.
* Exit status: 0 with no violation, 1 with violations (or a pool that never
  became healthy), 2 for bad input, which changes nothing.
* The seed and the command that replays the run are printed first, so a
  failure can always be reproduced.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from hacluster.chaos.checker import LAB, Verdict, check
from hacluster.chaos.journal import JOURNAL, Journal
from hacluster.chaos.runner import Runner
from hacluster.chaos.schedule import KINDS, Fault, schedule
from hacluster.lab.local import LabError
from hacluster.lab.open import open_lab, reporting_bad_input

REPORT = "report.txt"
TIMELINE = "timeline.png"


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``hacluster chaos``: a run, or ``--check DIR`` to judge a finished one again."""
    return reporting_bad_input(parser, lambda: _chaos(args))


def _chaos(args: argparse.Namespace) -> int:
    if args.check is not None:
        try:
            return judge(Path(args.check))[1]
        except (ValueError, FileNotFoundError) as error:
            raise LabError(f"cannot check {args.check}: {error}") from None
    return run_chaos(args.backend, args.hosts, args.timeout, args.duration, args.seed,
                     args.rate, Path(args.dir), keep=args.keep,
                     unsafe_watchdog_delay=args.unsafe_watchdog_delay)


def settle_limit(timeout: float) -> float:
    """How long the pool may take to settle after a fault is healed."""
    return 12 * timeout + 30


def replay(backend: str, hosts: int, timeout: float, duration: float, rate: float,
           seed: int) -> str:
    """The command that runs the same faults again (the seed fixes the schedule)."""
    return (f"hacluster chaos --backend {backend} --hosts {hosts} --timeout {timeout} "
            f"--duration {duration:g} --rate {rate:g} --seed {seed}")


def _timeline_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def judge(directory: Path) -> tuple[Verdict, int]:
    """Check the run in ``directory``, write its report and timeline, print the report."""
    verdict = check(directory)
    text = verdict.report()
    (directory / REPORT).write_text(text + "\n")
    print(text)
    if _timeline_available():
        from hacluster.chaos.timeline import draw

        print(f"timeline: {draw(verdict, directory / TIMELINE)}")
    else:
        print("timeline: not drawn (matplotlib missing: pip install 'hacluster[chaos]')")
    return verdict, 0 if verdict.ok else 1


def run_chaos(backend: str, hosts: int, timeout: float, duration: float, seed: int,
              rate: float, directory: Path, keep: bool = False,
              unsafe_watchdog_delay: float | None = None,
              faults: Iterable[Fault] | None = None) -> int:
    """Run chaos in ``directory`` and judge it; ``faults`` replaces the seeded schedule."""
    if backend not in KINDS:
        raise LabError(f"unknown backend {backend!r}; chaos runs on {', '.join(KINDS)}")
    if hosts < 2:
        raise LabError("a chaos run needs two hosts or more")
    if not duration > 0 or not rate > 0:
        raise LabError("--duration and --rate must be positive")
    if unsafe_watchdog_delay is not None and not 0 <= unsafe_watchdog_delay < 3600:
        raise LabError("--unsafe-watchdog-delay must be a number of seconds in 0..3600")
    if (directory / JOURNAL).exists():
        if (directory / LAB / "lab.json").exists():
            raise LabError(f"a chaos run is still up in {directory}: "
                           f"'hacluster lab --dir {directory / LAB} down' first")
        shutil.rmtree(directory)
    print(f"chaos: backend {backend}, {hosts} hosts, T={timeout}s, {duration:.0f}s, "
          f"{rate}/min, seed {seed} (replay: "
          f"{replay(backend, hosts, timeout, duration, rate, seed)})", flush=True)
    lab = open_lab(directory / LAB, backend)
    journal = Journal(directory / JOURNAL)
    journal.write("begin", backend=backend, hosts=hosts, timeout=timeout, seed=seed,
                  rate=rate, duration=duration, unsafe_watchdog_delay=unsafe_watchdog_delay)
    # the guests do not lock their disks: the HA decisions alone must keep VMs single
    lab.up(hosts, timeout, unsafe_watchdog_delay=unsafe_watchdog_delay, guest_lock=False)
    healthy = True
    try:
        runner = Runner(lab, hosts, journal, settle_limit(timeout))
        took = runner.settle(settle_limit(timeout))
        if took is None:
            journal.write("unsettled", n=0, limit=settle_limit(timeout), pool=runner.describe())
            healthy = False
        else:
            journal.write("ready", took=round(took, 3))
            if faults is None:
                faults = schedule(backend, hosts, timeout, seed, rate)
            count = runner.run(faults, duration)
            print(f"chaos: {count} faults injected; checking", flush=True)
    finally:
        journal.write("end")
        if not keep:
            lab.down()
    if not healthy:
        print("chaos: the pool never became healthy; see the report", file=sys.stderr)
    return judge(directory)[1] or (0 if healthy else 1)
