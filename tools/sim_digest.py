"""Digests of whole simulator runs: proof that a change altered no decision.

Runs seeded random schedules (``hacluster.sim.schedules``) in both modes, and
every named scenario, each with a full trace (every event, every heartbeat
sent), and prints one line per run: its seed, how much pool time it covered,
its violations and the SHA-256 of its whole trace (the time, host, kind and
text of every event: phases, suspicions, waits, commits, masters, VMs,
heartbeats). Two versions of the code that print the same lines made the same
decisions at the same moments. Nothing here measures time.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator, Sequence

from hacluster.core.node import Mode
from hacluster.sim.cluster import SimConfig, Simulation
from hacluster.sim.scenarios import SCENARIOS, run_scenario
from hacluster.sim.schedules import run_schedule
from hacluster.sim.trace import Trace


class DigestTrace(Trace):
    """A trace that keeps the most recent events, as the schedules' does, but
    also hashes every event it ever records (heartbeats included)."""

    def __init__(self, keep: int | None = None) -> None:
        super().__init__(keep=keep, beats=True)
        self.hash = hashlib.sha256()
        self.count = 0

    def record(self, time: float, host: int | None, kind: str, text: str) -> None:
        super().record(time, host, kind, text)
        self.count += 1
        self.hash.update(f"{time!r}|{host}|{kind}|{text}\n".encode())


class DigestSimulation(Simulation):
    """A simulation whose trace digests everything it records."""

    def __init__(self, config: SimConfig, trace: Trace | None = None) -> None:
        digest = DigestTrace(keep=trace.events.maxlen if trace is not None else None)
        super().__init__(config, trace=digest)


def schedule_lines(hosts: int, schedules: int, seed: int, mode: Mode,
                   timeout: float) -> Iterator[str]:
    for k in range(schedules):
        result = run_schedule(hosts, seed + k, mode, timeout, simulation=_Recorder)
        trace = _Recorder.last
        assert trace is not None
        yield (f"schedule hosts={hosts} mode={mode.value} seed={seed + k} "
               f"simulated={result.simulated:.6f} violations={len(result.violations)} "
               f"events={trace.count} sha256={trace.hash.hexdigest()}")


class _Recorder(DigestSimulation):
    """Remembers the trace of the last simulation made (run_schedule keeps it)."""

    last: DigestTrace | None = None

    def __init__(self, config: SimConfig, trace: Trace | None = None) -> None:
        super().__init__(config, trace)
        assert isinstance(self.trace, DigestTrace)
        _Recorder.last = self.trace


def scenario_lines(seed: int, timeout: float) -> Iterator[str]:
    for name, scenario in sorted(SCENARIOS.items()):
        trace = DigestTrace()
        result = run_scenario(scenario, seed, timeout, trace=trace)
        yield (f"scenario {name} ok={result.ok} violations={len(result.violations)} "
               f"events={trace.count} sha256={trace.hash.hexdigest()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hosts", default="7", help="comma-separated pool sizes")
    parser.add_argument("--schedules", type=int, default=40, help="schedules per size and mode")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--no-scenarios", action="store_true", help="skip the named scenarios")
    args = parser.parse_args(argv)
    print("command: python tools/sim_digest.py " + " ".join(argv or sys.argv[1:]), flush=True)
    for hosts in (int(h) for h in args.hosts.split(",")):
        for mode in Mode:
            for line in schedule_lines(hosts, args.schedules, args.seed, mode, args.timeout):
                print(line, flush=True)
    if not args.no_scenarios:
        for line in scenario_lines(args.seed, args.timeout):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
