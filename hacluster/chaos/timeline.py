"""The timeline of a chaos run as a PNG: hosts, faults, fences, master, VM placement.

Rules:

* One row per host, time in seconds from the run's start on the x axis.
* A host's daemon is drawn up from each ``start`` in its event log until it
  fences, its watchdog fires, the runner kills or restarts it, it starts
  again, or the run ends. The master holds a gold band in its row from
  ``master gained`` until it is lost or the host goes down.
* Every guest run (from the VM's own disk) is a bar in its host's row, one
  lane and one colour per VM, so a VM moving between hosts is visible.
* Faults are shaded spans from injection to heal, numbered as in the report;
  fences are red crosses; a double run is a red line across the figure.
* matplotlib draws it headless (Agg); it is an optional dependency
  (``pip install 'hacluster[chaos]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hacluster.chaos.checker import Verdict
from hacluster.vm.records import double_runs

FAULT_COLOURS = {"kill": "#d62728", "pause": "#ff7f0e", "freeze": "#17becf",
                 "partition": "#9467bd", "one-way": "#8c564b", "storage": "#e377c2",
                 "disconnect": "#7f7f7f", "restart": "#bcbd22"}
STOPS = ("fence", "watchdog")


def _host_segments(verdict: Verdict, hosts: int) -> tuple[dict[int, list[tuple[float, float]]],
                                                           dict[int, list[tuple[float, float]]]]:
    """Per host: when its daemon was up, and when it was master."""
    marks: dict[int, list[tuple[float, str]]] = {h: [] for h in range(hosts)}
    for event in verdict.events:
        host = int(event["host"])
        if host not in marks:
            continue
        if event["event"] == "start":
            marks[host].append((event["time"], "start"))
        elif event["event"] in STOPS:
            marks[host].append((event["time"], "stop"))
        elif event["event"] == "master":
            marks[host].append((event["time"], "gain" if event.get("gained") else "lose"))
    for fault in verdict.faults:
        if fault.kind in ("kill", "restart"):
            for host in fault.hosts:
                marks.setdefault(host, []).append((fault.injected, "stop"))
    up: dict[int, list[tuple[float, float]]] = {h: [] for h in marks}
    master: dict[int, list[tuple[float, float]]] = {h: [] for h in marks}
    for host, points in marks.items():
        since: float | None = None
        leading: float | None = None
        for time, what in sorted(points):
            if what in ("start", "stop"):
                if since is not None:
                    up[host].append((since, time))
                if leading is not None:
                    master[host].append((leading, time))
                since = time if what == "start" else None
                leading = None
            elif what == "gain" and since is not None:
                leading = time
            elif what == "lose" and leading is not None:
                master[host].append((leading, time))
                leading = None
        if since is not None:
            up[host].append((since, verdict.end))
        if leading is not None:
            master[host].append((leading, verdict.end))
    return up, master


def draw(verdict: Verdict, path: Path) -> Path:
    """Write the timeline PNG of ``verdict`` to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    hosts = int(verdict.params.get("hosts", len(verdict.host_names)))
    t0 = verdict.begin
    up, master = _host_segments(verdict, hosts)
    vms = sorted(verdict.runs)
    palette = plt.get_cmap("tab10")
    colour = {vm: palette(i % 10) for i, vm in enumerate(vms)}
    figure, axes = plt.subplots(figsize=(14, 1.1 * hosts + 2.2))
    for fault in verdict.faults:
        axes.axvspan(fault.injected - t0, max(fault.healed, fault.injected + 0.3) - t0,
                     color=FAULT_COLOURS.get(fault.kind, "#cccccc"), alpha=0.25, lw=0)
        axes.text(fault.injected - t0, hosts - 0.35, f"{fault.n} {fault.kind}", fontsize=7,
                  rotation=90, va="bottom", ha="right")
    for host in range(hosts):
        row = hosts - 1 - host
        for start, stop in up.get(host, []):
            axes.barh(row, stop - start, left=start - t0, height=0.8, color="#e8e8e8",
                      edgecolor="#b0b0b0", lw=0.5)
        for start, stop in master.get(host, []):
            axes.barh(row + 0.34, stop - start, left=start - t0, height=0.12, color="gold")
    lanes = max(1, len(vms))
    for lane, vm in enumerate(vms):
        for run in verdict.runs[vm]:
            on = verdict.host_names.get(run.host)
            if on is None:
                continue
            lane_y = hosts - 1 - on - 0.3 + 0.55 * lane / lanes
            axes.barh(lane_y, max(run.last - run.first, 0.05), left=run.first - t0,
                      height=0.5 / lanes, color=colour[vm])
    for event in verdict.events:
        if event["event"] in STOPS and int(event["host"]) < hosts:
            axes.plot(event["time"] - t0, hosts - 1 - int(event["host"]), "x", color="red",
                      markersize=9, mew=2)
    for instances in verdict.runs.values():
        for a, b in double_runs(instances):
            axes.axvline(max(a.first, b.first) - t0, color="red", lw=2)
    axes.set_yticks(range(hosts), [f"host {h}" for h in reversed(range(hosts))])
    axes.set_ylim(-0.6, hosts + 0.6)
    axes.set_xlim(0, verdict.end - t0 + 1)
    axes.set_xlabel("seconds since the run began")
    p = verdict.params
    axes.set_title(f"chaos {p.get('backend')}: {hosts} hosts, T={p.get('timeout')}s, "
                   f"seed {p.get('seed')}: {len(verdict.faults)} faults, "
                   f"{len(verdict.violations)} violation(s)")
    handles: list[Any] = [Patch(color=colour[vm], label=vm) for vm in vms]
    handles += [Patch(color="gold", label="master"), Patch(color="#e8e8e8", label="daemon up"),
                Line2D([], [], marker="x", color="red", ls="", label="fence")]
    handles += [Patch(color=c, alpha=0.4, label=k) for k, c in FAULT_COLOURS.items()
                if any(f.kind == k for f in verdict.faults)]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
