"""Crash to VMs running again, against T and pool size, beside the reference's bound.

For each pool size and timeout T it brings up a lab pool (the default demo
VMs: host 0 runs dhcp (order 0, start delay 2 s) and sql (order 1), every
other host one web VM), waits until it is settled, SIGKILLs the master with
all it runs, and reads from the guests' own disks when every protected VM
the dead host ran was running again somewhere else: the first of them, and
the last (after the order delay). Beside it, the reference's bound at the
same T: detection T, then its fence wait (max(Wh, Ws) - T + max(t1, t2) with
Wh = T, Ws = T + 15), then up to 20 s of liveset polling before its restart
loop even starts; the same 2 s order delay is added to compare "all".
The reference refuses T < 10; its bound is still shown.

With ``--networks 2`` (netns) every host has a second network and each crash
is run twice, side by side: both networks up, then network 0 cut at every
host (``lab cut 0``) before the master is killed, so that heartbeats, the
new master's surveys, restarts and database pushes all go over network 1.

Also ``--soak MINUTES``: an idle pool of ``--soak-hosts`` at each T, counting
fences that happened with no fault at all (false fences), with each node
daemon's mean CPU and its RSS over the soak. The soak's pool is brought up
as an operator would: every host started with HA off, then HA enabled once
all of them run (``hactl pool-ha-enable``), so that starting 64 daemons on two
cores does not count against the pool it soaks. ``--mode clustered`` runs
either without the heartbeat SR (network quorum only).

Prints Markdown tables and the command; never asserts on time. ``--plot PNG
LOG...`` draws the crash tables of earlier runs' printed output as a figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_failover import reference_bound  # tools/ is on the path of its scripts
from lab_cpu import cpu_ticks, daemons

from hacluster.chaos.journal import Journal
from hacluster.chaos.runner import Runner, vm_running
from hacluster.core.timing import Timing
from hacluster.deploy.poolfiles import HACTL_FILE
from hacluster.lab.docker import enable_ha
from hacluster.lab.local import LocalLab, read_events
from hacluster.lab.netns import NetnsLab
from hacluster.lab.open import open_lab
from hacluster.lab.poll import wait_until
from hacluster.lab.workloads import START_DELAY, VM_SR, runs

POLLING = 20.0  # the reference polls the liveset this often before restarting


def reference_restarts(T: float) -> float:
    """Crash to the reference's restart loop starting: its commit bound, then polling."""
    return reference_bound(T) + POLLING


def _up(backend: str, root: Path, hosts: int, T: float, mode: str = "statefile",
        enable_when_up: bool = False, networks: int = 1) -> tuple[LocalLab, Runner]:
    """A lab pool of ``hosts`` at ``T``, armed as each host starts, or with HA
    enabled through the management plane once every host runs (``enable_when_up``)."""
    lab = open_lab(root / "lab", backend)
    lab.up(hosts, T, base_port=21000, networks=networks, mode=mode, ha_off=enable_when_up)
    if enable_when_up:
        if wait_until(lambda: all(row.get("phase") == "HA_OFF" for row in lab.status()),
                      60 + 2 * hosts, poll=1.0) is None:
            lab.down()
            raise TimeoutError(f"{hosts} hosts never all started with HA off")
        enable_ha(lab.root / HACTL_FILE, T, wait=120)
    runner = Runner(lab, hosts, Journal(root / "journal.jsonl"), settle_limit=60 + 10 * T)
    return lab, runner


def crash_once(backend: str, hosts: int, T: float, mode: str, networks: int = 1,
               cut: bool = False) -> tuple[float, float]:
    """Seconds from killing the master to its first and to its last protected VM
    running (with network 0 cut at every host first, if ``cut``)."""
    with tempfile.TemporaryDirectory(prefix="hacluster-recovery-") as tmp:
        lab, runner = _up(backend, Path(tmp), hosts, T, mode, networks=networks)
        try:
            if runner.settle(60 + 20 * T) is None:
                raise TimeoutError(f"{hosts} hosts at T={T}: the pool never settled")
            if cut:
                assert isinstance(lab, NetnsLab)  # checked in main
                lab.cut(0)
            time.sleep(T)  # a steady pool
            victim = runner.master()
            name = f"host{victim}"
            mine = [vm for vm, instances in runs(lab.root).items()
                    if vm in runner.protected and instances and instances[-1].host == name]
            killed = time.time()
            lab.kill(victim)
            disks = lab.root / VM_SR

            def back() -> bool:
                now = time.time()
                return all(vm_running(disks / f"{vm}.disk", now) and
                           runs(lab.root)[vm][-1].first > killed for vm in mine)

            deadline = time.monotonic() + 60 + 20 * T
            while not back():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{hosts} hosts at T={T}: VMs {mine} not back")
                time.sleep(0.1)
            starts = [runs(lab.root)[vm][-1].first - killed for vm in mine]
            return min(starts), max(starts)
        finally:
            lab.down()


def _daemons(lab: Path) -> dict[int, tuple[float, int]]:
    """The lab's node daemons: pid -> (CPU seconds, RSS bytes)."""
    found = {}
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    for pid in daemons(lab):
        try:
            user, system = cpu_ticks(Path(f"/proc/{pid}/stat"))
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        found[pid] = ((user + system) / tick, rss)
    return found


def soak(backend: str, hosts: int, T: float, minutes: float,
         mode: str) -> tuple[int, int, float, float]:
    """Fences and liveset removals on an idle pool over ``minutes``, and each node
    daemon's mean CPU (cores) and RSS (MiB) over that time."""
    with tempfile.TemporaryDirectory(prefix="hacluster-soak-") as tmp:
        lab, runner = _up(backend, Path(tmp), hosts, T, mode, enable_when_up=True)
        try:
            if runner.settle(60 + 20 * T) is None:
                raise TimeoutError(f"{hosts} hosts at T={T}: the pool never settled")
            start, before = time.time(), _daemons(lab.root)
            time.sleep(minutes * 60)
            after, took = _daemons(lab.root), time.time() - start
            events = [e for e in read_events(lab.root) if e["time"] >= start]
        finally:
            lab.down()
    fences = sum(1 for e in events if e["event"] in ("fence", "watchdog"))
    removals = sum(len(e.get("removed", [])) for e in events if e["event"] == "commit")
    alive = [pid for pid in before if pid in after]
    cpu = sum(after[p][0] - before[p][0] for p in alive) / took / max(1, len(alive))
    rss = sum(after[p][1] for p in alive) / max(1, len(alive)) / 2**20
    return fences, removals, cpu, rss


def plot(png: Path, logs: list[Path]) -> None:
    """Ours (all VMs back) and the reference's bound against T, one line per pool size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours: dict[int, list[tuple[float, float]]] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 7 and cells[0].isdigit() and cells[3].replace(".", "").isdigit():
                ours.setdefault(int(cells[0]), []).append((float(cells[1]), float(cells[3])))
    figure, axes = plt.subplots(figsize=(7, 4.5))
    timeouts = sorted({t for points in ours.values() for t, _ in points})
    axes.plot(timeouts, [reference_restarts(t) + START_DELAY for t in timeouts], "k--",
              label="reference: restarts begin + order delay (bound)")
    for hosts, points in sorted(ours.items()):
        points.sort()
        axes.plot([t for t, _ in points], [v for _, v in points], "o-",
                  label=f"hacluster, {hosts} hosts: all VMs running")
    axes.set_xlabel("HA timeout T (s)")
    axes.set_ylabel("master crash to protected VMs running (s)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["netns", "local"], default="netns")
    parser.add_argument("--mode", choices=["statefile", "clustered"], default="statefile")
    parser.add_argument("--hosts", default="3,8,16", help="pool sizes, comma-separated")
    parser.add_argument("--timeouts", default="3,5,10", help="values of T, comma-separated")
    parser.add_argument("--soak", type=float, default=0.0, metavar="MINUTES",
                        help="instead: soak idle pools for this long at each T")
    parser.add_argument("--soak-hosts", type=int, default=16)
    parser.add_argument("--networks", type=int, choices=[1, 2], default=1,
                        help="2 (netns): each crash also with network 0 cut")
    parser.add_argument("--plot", metavar="PNG", help="instead: plot the tables in LOGS")
    parser.add_argument("logs", nargs="*", type=Path, help="printed output of earlier runs")
    args = parser.parse_args(argv)
    if args.plot:
        plot(Path(args.plot), args.logs)
        return 0
    timeouts = [float(t) for t in args.timeouts.split(",")]
    print("command: python tools/bench_recovery.py " + " ".join(argv or sys.argv[1:]))
    print()
    if args.soak:
        print("| T (s) | hosts | backend | mode | minutes idle | fences | hosts removed "
              "| CPU per node (cores) | RSS per node (MiB) |")
        print("|---:|---:|---|---|---:|---:|---:|---:|---:|")
        for T in timeouts:
            fences, removals, cpu, rss = soak(args.backend, args.soak_hosts, T, args.soak,
                                              args.mode)
            print(f"| {T:g} | {args.soak_hosts} | {args.backend} | {args.mode} | {args.soak:g} "
                  f"| {fences} | {removals} | {cpu:.4f} | {rss:.0f} |", flush=True)
        return 0
    if args.networks == 2 and args.backend != "netns":
        parser.error("--networks 2 needs the netns backend (a second bridge to cut)")
    cuts = [False, True] if args.networks == 2 else [False]
    print("| hosts | T (s) | ours: first VM (s) | ours: all VMs (s) | reference: restarts "
          "begin (s) | reference + order delay (s) | ours all / reference |"
          + (" networks |" if args.networks == 2 else ""))
    print("|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if args.networks == 2 else ""))
    for hosts in (int(h) for h in args.hosts.split(",")):
        for T in timeouts:
            Timing.derive(T)
            for cut in cuts:
                paths = (" network 0 cut |" if cut else " both up |") if len(cuts) > 1 else ""
                try:
                    first, last = crash_once(args.backend, hosts, T, args.mode,
                                             args.networks, cut)
                except TimeoutError as error:
                    print(f"| {hosts} | {T:g} | {error} | | | | |{paths}", flush=True)
                    continue
                ref = reference_restarts(T)
                note = " (refuses T<10)" if T < 10 else ""
                print(f"| {hosts} | {T:g} | {first:.2f} | {last:.2f} | {ref:.1f}{note} | "
                      f"{ref + START_DELAY:.1f} | {last / (ref + START_DELAY):.2f} |{paths}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
