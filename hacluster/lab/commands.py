"""Command handlers for ``node``, ``status``, ``sr-format`` and ``lab`` (``chaos`` is
:mod:`hacluster.chaos.command`, above the lab).

Rules: bad input is reported as a one-line error with what to do, exit 2, and
changes nothing; the daemon's exit status is passed through (0 after a clean
shutdown, 75 after a fence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from hacluster.lab import members
from hacluster.lab.local import LabError, LocalLab
from hacluster.lab.open import open_lab, reporting_bad_input
from hacluster.lab.render import status_table
from hacluster.node.config import Candidate, load, load_node, read_key
from hacluster.storage.sr import format_sr
from hacluster.storage.volume import new_generation


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    return reporting_bad_input(parser, lambda: _command(args))


def _command(args: argparse.Namespace) -> int:
    if args.command == "node":
        return _node(args)
    if args.command == "status":
        from hacluster.node.daemon import query_status

        print(json.dumps(query_status(Path(args.socket)), indent=2))
        return 0
    if args.command == "sr-format":
        key = read_key(Path(args.key_file))
        header = format_sr(args.path, args.hosts, key, new_generation())
        print(f"formatted {args.path}: {header.hosts} host slots, generation "
              f"{header.generation:x}")
        return 0
    return _lab(args)


def _node(args: argparse.Namespace) -> int:
    if args.check:
        if args.armed:
            raise LabError("--check starts nothing: drop --armed")
        from hacluster.deploy.command import run_check

        return run_check(args.config)
    loaded = load_node(args.config)
    from hacluster.node.daemon import serve

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    if isinstance(loaded, Candidate):  # a new host: it serves pool-join, then is a member
        from hacluster.node.candidate import JOINED, wait_to_join

        if runner(wait_to_join(loaded)) != JOINED:
            return 1
        loaded = load(args.config)
    code: int = runner(serve(loaded, args.armed))
    # leave at once: a storage thread stuck on a hung volume must not keep a
    # fenced (or shut down) daemon alive at interpreter exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _lab(args: argparse.Namespace) -> int:
    verb = args.verb
    lab = open_lab(Path(args.dir), args.backend if verb == "up" else None)
    if verb == "up":
        lab.up(args.hosts, args.timeout, networks=args.networks, mode=args.mode,
               pool=Path(args.pool) if args.pool else None, ha_off=args.ha_off,
               slots=args.slots, sr=args.sr)
        print(f"lab up in {args.dir}: {args.hosts} hosts ({lab.backend} backend), "
              + ("HA off (enable it: " if args.ha_off else f"T={args.timeout}s (")
              + f"hactl --config {args.dir}/hactl.toml "
              + ("pool-ha-enable)" if args.ha_off else "status)"))
    elif verb == "status":
        print(json.dumps(lab.status(), indent=2) if args.json else status_table(lab.status()))
    elif verb == "events":
        for record in lab.events():
            print(json.dumps(record))
    elif verb == "down":
        lab.down()
        print("lab down")
    elif verb == "kill" and args.host is None:
        print(f"killed hosts {lab.kill_all()}")
    elif verb == "join":
        index = members.join(lab)
        print(f"host {index} joined: it is starting (hacluster lab status)")
    elif verb == "eject":
        members.eject(lab, args.host)
        print(f"host {args.host} ejected: index {args.host} is free")
    elif verb == "kill":
        lab.kill(args.host)
    elif verb == "restart" and args.host is None:
        print(f"restarted hosts {lab.restart_all()}, joining: with no armed host left they "
              "re-form the pool from the last liveset on the SR (hacluster lab status)")
    elif verb == "restart":
        lab.restart(args.host)
    elif verb == "pause":
        lab.pause(args.host, args.seconds)
    elif verb in ("disconnect", "reconnect"):
        _docker(lab, verb, args.host)
    elif lab.backend in ("local", "docker"):
        lab.network_fault(verb)
    else:
        _network(lab, verb, args)
    return 0


def _docker(lab: LocalLab, verb: str, host: int) -> None:
    from hacluster.lab.docker import DockerLab

    if not isinstance(lab, DockerLab):
        raise LabError(f"'{verb}' needs the docker backend (lab up --backend docker); "
                       "the netns backend has partition and heal")
    if verb == "disconnect":
        lab.disconnect(host)
    else:
        lab.reconnect(host)


def _network(lab: LocalLab, verb: str, args: argparse.Namespace) -> None:
    from hacluster.lab.netns import NetnsLab

    assert isinstance(lab, NetnsLab)
    if verb == "partition":
        if len(args.groups) < 2:
            raise LabError("partition needs two groups or more: hacluster lab partition "
                           "0,1 2,3,4")
        lab.partition(args.groups)
    elif verb == "drop-from":
        lab.drop_from(args.host, args.peer)
    elif verb == "cut":
        lab.cut(args.network)
    elif verb == "heal":
        lab.heal()
    elif verb == "storage":
        lab.storage(args.host, args.fault)
