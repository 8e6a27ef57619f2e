"""``hacluster demo``: a real 3-host pool on this machine fails over in front of you.

Rules: no root and no external service (the ``local`` lab backend); the pool
lives in a temporary directory that is removed afterwards, whatever happens;
the story is told from the nodes' own event logs, and where the VMs ran from
the guests' own disk records.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hacluster.lab.local import LabError, LocalLab
from hacluster.lab.poll import wait_until
from hacluster.lab.render import status_table
from hacluster.lab.workloads import runs
from hacluster.vm.records import Instance

SHOWN = {"suspect", "phase", "fence", "commit", "master", "watchdog", "start", "alert",
         "vm-started", "vm-force-halted", "plan"}
PROTECTED_ON_HOST_0 = ("vm-dhcp", "vm-sql")


def _wait(what: str, check: Callable[[], bool], limit: float) -> bool:
    if wait_until(check, limit, poll=0.2) is not None:
        return True
    print(f"  (gave up waiting for {what} after {limit:.0f}s)")
    return False


def _describe(record: dict[str, Any], start: float) -> str:
    event = record["event"]
    detail = {k: v for k, v in record.items() if k not in ("time", "host", "event")}
    if event == "phase":
        text = f"{detail['old']} -> {detail['new']}: {detail['why']}"
    elif event == "master":
        text = "gained the master lock" if detail.get("gained") else f"lost: {detail['reason']}"
    elif event == "commit":
        text = f"liveset {detail['liveset']}" + (
            f", removed {detail['removed']}" if detail.get("removed") else "")
    elif event == "suspect":
        text = f"host {detail['peer']} missing on {detail['channel']}"
    elif event == "start":
        text = f"daemon started on {detail.get('address')} (O_DIRECT: {detail.get('direct_io')})"
    elif event in ("vm-started", "vm-force-halted"):
        text = f"{detail['vm']} on {detail['on']}" + (
            f" ({detail['why']})" if detail.get("why") else "")
    elif event == "alert":
        text = f"{detail['name']}: {detail['body']}"
    elif event == "plan":
        text = (f"recovery plan: max host failures to tolerate {detail['max_failures']} "
                f"({'exact' if detail['exact'] else 'bound'}), configured "
                f"{detail['configured']}")
    else:
        text = str(detail.get("reason") or detail.get("text") or detail)
    return f"{record['time'] - start:8.3f}s  host {record['host']}  {event.upper():<8} {text}"


def run_demo(timeout: float, hosts: int = 3) -> int:
    with tempfile.TemporaryDirectory(prefix="hacluster-demo-") as tmp:
        lab = LocalLab(Path(tmp))
        print(f"Starting {hosts} node daemons on 127.0.0.1-{hosts} (T={timeout}s), sharing the "
              f"heartbeat SR file {tmp}/heartbeat.sr ...")
        print("Host 0 runs dhcp (protected, order 0), sql (protected, order 1), batch "
              "(best-effort) and scratch (unprotected); hosts 1.. run a web VM each.")
        try:
            lab.up(hosts, timeout)
        except LabError as error:
            print(f"hacluster demo: the pool could not start: {error}", file=sys.stderr)
            return 1
        try:
            return _story(lab, timeout, hosts)
        finally:
            lab.down()
            print("\nlab stopped and removed.")


def _masters(lab: LocalLab) -> list[int]:
    return [row["host"] for row in lab.status() if row.get("master")]


def _story(lab: LocalLab, timeout: float, hosts: int) -> int:
    start = time.time()
    if not _wait("a master", lambda: len(_masters(lab)) == 1, 10 * timeout):
        print(status_table(lab.status()))
        return 1
    print("\nThe pool is healthy:\n")
    print(status_table(lab.status()))
    master = _masters(lab)[0]
    print(f"\nKilling host {master}, the master (SIGKILL to its whole process group) ...")
    killed_at = time.time()
    lab.kill(master)
    survivors = [h for h in range(hosts) if h != master]

    def failed_over() -> bool:
        rows = [r for r in lab.status() if r["host"] in survivors]
        return (len(_masters(lab)) == 1 and
                all(r.get("liveset") == survivors for r in rows))

    ok = _wait("the failover", failed_over, 10 * timeout)
    moved = (*PROTECTED_ON_HOST_0, "vm-batch")
    ok = ok and _wait("the VMs to run again", lambda: all(
        _run_after(lab, vm, killed_at) for vm in moved), 10 * timeout)
    ok = ok and _wait("the master to record them running", lambda: _recorded(lab, moved),
                      10 * timeout)
    print("\nWhat the nodes logged:\n")
    for record in lab.events():
        if record["event"] in SHOWN:
            print(_describe(record, start))
    print("\nAfter the failover:\n")
    print(status_table(lab.status()))
    print("\nWhat the guests wrote on their disks (seconds from the kill):\n")
    for vm, instances in runs(lab.root).items():
        spans = ", ".join(f"{i.host} {i.first - killed_at:+.1f}..{i.last - killed_at:+.1f}"
                          for i in instances)
        print(f"  {vm:<12} {spans}")
    if ok:
        commits = [r["time"] for r in lab.events()
                   if r["event"] == "commit" and r.get("removed") == [master]]
        print(f"\nHost {master} was removed {max(commits) - killed_at:.1f}s after the kill; "
              f"host {_masters(lab)[0]} is the new master.")
        dhcp, sql = (_run_after(lab, vm, killed_at) for vm in PROTECTED_ON_HOST_0)
        assert dhcp is not None and sql is not None
        print(f"dhcp (order 0) ran again on {dhcp.host} {dhcp.first - killed_at:.1f}s after the "
              f"kill, sql (order 1) {sql.first - dhcp.first:.1f}s after dhcp (its start delay "
              f"is 2 s); batch (best-effort) after them; scratch (unprotected) stays down.")
    return 0 if ok else 1


def _recorded(lab: LocalLab, vms: tuple[str, ...]) -> bool:
    """Whether the master's pool database has every one of ``vms`` running."""
    pools = [row["pool"] for row in lab.status() if "pool" in row]
    return len(pools) == 1 and all(vm in pools[0]["running"] for vm in vms)


def _run_after(lab: LocalLab, vm: str, t: float) -> Instance | None:
    return next((i for i in runs(lab.root).get(vm, []) if i.first >= t), None)
