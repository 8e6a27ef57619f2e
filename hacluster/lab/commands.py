"""Command handlers for ``node``, ``status``, ``sr-format`` and ``lab``.

Rules: bad input is reported as a one-line error with what to do, exit 2, and
changes nothing; the daemon's exit status is passed through (0 after a clean
shutdown, 75 after a fence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path
from typing import Any

from hacluster.lab.local import LabError, LocalLab
from hacluster.node.config import ConfigError, load, read_key
from hacluster.storage.sr import SRError, format_sr


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'host':>4}  {'phase':<11} {'master':<6} {'liveset':<20} {'dropped':>7}"]
    for row in rows:
        dropped = sum(row.get("dropped", {}).values())
        master = "yes" if row.get("master") else ""
        lines.append(f"{row['host']:>4}  {row['phase']:<11} {master:<6} "
                     f"{row.get('liveset', '')!s:<20} {dropped:>7}")
    return "\n".join(lines)


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "node":
            return _node(args)
        if args.command == "status":
            from hacluster.node.daemon import query_status

            print(json.dumps(query_status(Path(args.socket)), indent=2))
            return 0
        if args.command == "sr-format":
            key = read_key(Path(args.key_file))
            header = format_sr(args.path, args.hosts, key, random.SystemRandom().getrandbits(63))
            print(f"formatted {args.path}: {header.hosts} host slots, generation "
                  f"{header.generation:x}")
            return 0
        return _lab(args)
    except (ConfigError, SRError, LabError) as error:
        parser.exit(2, f"hacluster: {error}\n")
    except OSError as error:
        parser.exit(2, f"hacluster: {error}\n")


def _node(args: argparse.Namespace) -> int:
    config = load(args.config)
    from hacluster.node.daemon import serve

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    code: int = runner(serve(config, args.armed))
    return code


def _lab(args: argparse.Namespace) -> int:
    lab = LocalLab(Path(args.dir))
    verb = args.verb
    if verb == "up":
        lab.up(args.hosts, args.timeout)
        print(f"lab up in {args.dir}: {args.hosts} hosts, T={args.timeout}s "
              f"(hacluster lab --dir {args.dir} status)")
    elif verb == "status":
        print(_table(lab.status()))
    elif verb == "events":
        for record in lab.events():
            print(json.dumps(record))
    elif verb == "down":
        lab.down()
        print("lab down")
    elif verb == "kill":
        lab.kill(args.host)
    elif verb == "restart":
        lab.restart(args.host)
    elif verb == "pause":
        lab.pause(args.host, args.seconds)
    else:
        lab.network_fault(verb)
    return 0
