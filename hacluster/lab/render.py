"""The text table of a lab pool's status (``hacluster lab status``, the demo)."""

from __future__ import annotations

from typing import Any


def ranges(hosts: list[int]) -> str:
    """Host numbers as runs: [0, 1, 2, 5, 7, 8] is "[0-2, 5, 7-8]"; a pool of 128 fits a line."""
    runs: list[list[int]] = []
    for host in sorted(hosts):
        if runs and host == runs[-1][-1] + 1:
            runs[-1].append(host)
        else:
            runs.append([host])
    return "[" + ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) + "]"


def status_table(rows: list[dict[str, Any]]) -> str:
    """One line per host, then what hosts wait for, the plan, halted VMs and alerts."""
    lines = [f"{'host':>4}  {'phase':<11} {'master':<6} {'liveset':<20} {'dropped':>7}  vms"]
    for row in rows:
        dropped = sum(row.get("dropped", {}).values())
        master = "yes" if row.get("master") else ""
        liveset = ranges(row["liveset"]) if "liveset" in row else ""
        lines.append(f"{row['host']:>4}  {row['phase']:<11} {master:<6} "
                     f"{liveset:<20} {dropped:>7}  "
                     f"{' '.join(row.get('vms', []))}")
    lines += [f"host {row['host']} waits: {text}"
              for row in rows for text in row.get("waiting", [])]
    plans = [row["pool"] for row in rows if "pool" in row]
    for pool in plans:
        plan = pool["plan"]
        if plan:
            lines.append(f"plan: max host failures to tolerate {plan['max_failures']} "
                         f"({'exact' if plan['exact'] else 'bound'}), configured "
                         f"{plan['configured']}"
                         + (", OVERCOMMITTED" if plan["overcommitted"] else ""))
        if pool["halted"]:
            lines.append(f"halted: {' '.join(pool['halted'])}")
        lines += [f"alert: {a['name']}: {a['body']}" for a in pool["alerts"]]
    return "\n".join(lines)
