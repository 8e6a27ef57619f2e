"""``hacluster simulate --pool FILE --fail HOSTS [--partition GROUPS]``: a what-if,
offline, and the worker behind ``hactl pool-ha-whatif`` (``--pool-json -``).

Rules: the pool comes from a pool file (TOML) or, for the master, as JSON on
stdin (:func:`hacluster.model.poolfile.to_data`); hosts are named; the
prediction (:mod:`hacluster.sim.whatif`) is printed as text or, with
``--json``, as JSON. Bad input is a clear error (exit 2) and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hacluster.core.node import Mode
from hacluster.core.pool import PoolError
from hacluster.model import poolfile
from hacluster.sim.whatif import WhatIfError, predict


def hosts(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def run_whatif(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.pool_json is not None:
            source = sys.stdin.read() if args.pool_json == "-" \
                else Path(args.pool_json).read_text()
            pool = poolfile.parse(json.loads(source), "the pool (JSON)").pool
        else:
            pool = poolfile.load(args.pool).pool
        groups = [hosts(g) for g in args.partition.split("/")] if args.partition else []
        result = predict(pool, args.timeout, Mode(args.mode), hosts(args.fail), groups,
                         args.seed)
    except (PoolError, WhatIfError, ValueError, OSError) as error:
        parser.exit(2, f"hacluster simulate: {error}\n")
    print(json.dumps(result) if args.json else render(result))
    return 0


def render(result: dict[str, Any]) -> str:
    """The prediction as people read it: a timeline, then what runs where."""
    lines = [f"predicted with the simulator: T = {result['timeout']:g} s, "
             f"{result['mode']} mode; times are seconds after the fault",
             f"master before: {', '.join(result['master_before']) or 'none'}; after: "
             f"{', '.join(result['master_after']) or 'none'}",
             f"survivors: {', '.join(result['survivors']) or 'none'}; fenced: "
             f"{', '.join(result['fenced']) or 'none'}", "", "timeline:"]
    lines += [f"  {e['at']:7.2f} s  {e['text']}" for e in result["events"]] or ["  (nothing)"]
    lines += ["", "VMs that had to move:"]
    for vm in result["vms"]:
        where = f"runs on {vm['runs_on']} at {vm['at']:.2f} s" if "runs_on" in vm \
            else "stays down"
        lines.append(f"  {vm['vm']:<12} ({vm['priority']}, order {vm['order']}, was on "
                     f"{vm['was_on']}): {where}")
    if not result["vms"]:
        lines.append("  none")
    if result["checker"]:
        lines += ["", "THE CHECKER FOUND VIOLATIONS (a bug: please report it):",
                  *result["checker"]]
    return "\n".join(lines)
