"""Failover on real processes: fault-to-commit time against the reference's bound.

For each timeout T and each fault of the master (``crash``, ``partition``
away from the others, ``pause`` of its daemon for longer than T), it brings up
a pool, waits until it is healthy, injects the fault and measures, from the
nodes' own event logs, the time until the last survivor committed the new
liveset. Beside it, the reference's bound at the same T: detection T plus its
fence wait max(Wh, Ws) - T + max(t1, t2) with its own derivation (Wh = T,
Ws = T + 15, t1 = min((T+10)/10, 3), t2 = max(2, T/20)); the reference refuses
T < 10, the bound is still shown for comparison. The ratio is ours / bound.

It also reports, on an idle healthy pool of ``--idle-hosts`` local processes,
CPU% and RSS per node and heartbeat packets per second.

Needs root for the netns backend (``--backend local`` covers crash and pause
only). Prints Markdown tables and the command; never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hacluster.core.timing import Timing
from hacluster.lab.local import LocalLab
from hacluster.lab.open import open_lab
from hacluster.lab.poll import wait_until


def reference_bound(T: float) -> float:
    t1, t2 = min((T + 10) / 10, 3.0), max(2.0, T / 20)
    wh, ws = T, T + 15
    return T + max(wh, ws) - T + max(t1, t2)


def _wait(check: Callable[[], bool], limit: float) -> None:
    if wait_until(check, limit) is None:
        raise TimeoutError("the pool did not settle")


def one_run(backend: str, T: float, fault: str, hosts: int) -> float:
    with tempfile.TemporaryDirectory(prefix="hacluster-bench-") as tmp:
        lab = open_lab(Path(tmp) / "lab", backend)
        lab.up(hosts, T)
        try:
            _wait(lambda: sum(bool(r.get("master")) for r in lab.status()) == 1, 20 * T)
            time.sleep(T)  # a steady pool
            master = next(r["host"] for r in lab.status() if r.get("master"))
            victim = master  # every fault hits the master: a new master is elected too
            start = time.time()
            if fault == "crash":
                lab.kill(victim)
            elif fault == "pause":
                timing = Timing.derive(T)
                lab.pause(victim, timing.lease + 1.0)
            else:
                from hacluster.lab.netns import NetnsLab

                assert isinstance(lab, NetnsLab)
                lab.partition([[victim], [h for h in range(hosts) if h != victim]])
            survivors = [h for h in range(hosts) if h != victim]

            def committed() -> bool:
                done = {e["host"] for e in lab.events()
                        if e["event"] == "commit" and victim in e.get("removed", [])}
                return set(survivors) <= done

            _wait(committed, 20 * T)
            last: float = max(e["time"] for e in lab.events()
                              if e["event"] == "commit" and victim in e.get("removed", []))
            return last - start
        finally:
            lab.down()


def idle(hosts: int, T: float, seconds: float) -> tuple[float, float, float, int]:
    """CPU% and RSS (MiB) per node, heartbeat packets/s of an idle local pool, and
    how many nodes fenced meanwhile (an overloaded machine stalls daemons)."""
    with tempfile.TemporaryDirectory(prefix="hacluster-idle-") as tmp:
        lab = LocalLab(Path(tmp) / "lab")
        lab.up(hosts, T, base_port=19000)
        try:
            _wait(lambda: sum(bool(r.get("master")) for r in lab.status()) == 1, 30 * T)
            pids = [lab.pid(i) for i in range(hosts)]
            before = {pid: _cpu(pid) for pid in pids}
            time.sleep(seconds)
            after = {pid: _cpu(pid) for pid in pids if lab.running(pids.index(pid))}
            alive = list(after)
            cpu = sum(after[p] - before[p] for p in alive) / seconds / max(1, len(alive)) * 100
            rss = sum(_rss(pid) for pid in alive) / max(1, len(alive))
        finally:
            lab.down()
    t1 = Timing.derive(T).t1
    return cpu, rss, hosts * (hosts - 1) / t1, hosts - len(alive)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="failover benchmark on real processes")
    parser.add_argument("--backend", choices=["netns", "local"], default="netns")
    parser.add_argument("--timeouts", default="3,5,10")
    parser.add_argument("--faults", default="crash,partition,pause")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--idle-hosts", default="16,64")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--idle-timeout", type=float, default=5.0, help="T of the idle pools")
    args = parser.parse_args(argv)
    faults = args.faults.split(",")
    if args.backend == "local" and "partition" in faults:
        parser.error("partitions need --backend netns")
    print("command: python tools/bench_failover.py " + " ".join(argv or sys.argv[1:]))
    print()
    print("| T (s) | fault | ours: fault to commit (s) | reference bound (s) | ours / bound |")
    print("|---:|---|---:|---:|---:|")
    for T in (float(t) for t in args.timeouts.split(",")):
        for fault in faults:
            took = one_run(args.backend, T, fault, args.hosts)
            ref = reference_bound(T)
            note = " (ref refuses T<10)" if T < 10 else ""
            print(f"| {T:g} | {fault} | {took:.2f} | {ref:.1f}{note} | {took / ref:.2f} |",
                  flush=True)
    if args.idle_hosts:
        print()
        print(f"idle pools, local backend, T = {args.idle_timeout:g} s")
        print("| hosts | CPU % per node | RSS MiB per node | heartbeat packets/s (pool) "
              "| nodes fenced while idle |")
        print("|---:|---:|---:|---:|---:|")
        for hosts in (int(h) for h in args.idle_hosts.split(",")):
            cpu, rss, pps, fenced = idle(hosts, args.idle_timeout, args.idle_seconds)
            print(f"| {hosts} | {cpu:.2f} | {rss:.1f} | {pps:,.0f} | {fenced} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
