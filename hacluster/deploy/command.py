"""The ``hacluster pool init`` command line and ``hacluster node --check``'s output.

Rules: bad input is one line, ``hacluster pool init: <what to do>`` (or
``pool add-host``), exit status 2, and nothing is written; a pool made, or a
host added, prints what to copy where.
``node --check`` prints its report and exits 0 (ready) or 1.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from hacluster.core.node import Mode
from hacluster.core.pool import PoolError
from hacluster.deploy.addhost import AddHostRequest, add_host
from hacluster.deploy.addhost import guide as addhost_guide
from hacluster.deploy.check import check_node
from hacluster.deploy.hostlist import parse_hosts, parse_port
from hacluster.deploy.init import (
    DEFAULT_AGENT_PORT,
    DEFAULT_HEARTBEAT_PORT,
    DEFAULT_HOST_MEMORY,
    DEFAULT_MGMT_PORT,
    DEFAULT_SLOTS,
    DEFAULT_TIMEOUT,
    InitRequest,
    guide,
    init_pool,
)
from hacluster.mgmt.tls import TLSError
from hacluster.model import poolfile
from hacluster.model.address import ConfigError
from hacluster.storage.sr import SRError

DIRECTORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _port(text: str) -> int:
    try:
        return parse_port(text, "port")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pool = sub.add_parser("pool", help="create a pool of real hosts (docs/deploy.md)")
    verbs = pool.add_subparsers(dest="pool_verb", required=True)
    init = verbs.add_parser(
        "init", help="write a new pool's files and format its heartbeat SR",
        description="Write the pool key, the pool CA, a certificate and node.toml per host, "
        "the pool secret, hactl.toml and the pool file into --out (one directory per "
        "destination), format the SR, and print what to copy where. Nothing is written "
        "when any input is refused.")
    init.add_argument("--name", required=True, help="the pool's name")
    init.add_argument("--hosts", required=True, metavar="ADDR,ADDR,...",
                      help="the hosts in HA order: IP or name, optional :PORT (heartbeat), "
                      "A1/A2 for two heartbeat networks; IPv6 with a port as [ADDR]:PORT")
    init.add_argument("--sr", required=True, type=Path,
                      help="the shared volume (block device or file) to format")
    init.add_argument("--out", type=Path,
                      help="a new (or empty) directory for the files (default: ./NAME)")
    init.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                      help=f"HA timeout T in seconds (default {DEFAULT_TIMEOUT:g})")
    init.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.STATEFILE.value,
                      help="statefile (heartbeat SR) or clustered (network quorum only)")
    init.add_argument("--heartbeat-port", type=_port, default=DEFAULT_HEARTBEAT_PORT,
                      help=f"UDP, for hosts given without a port (default "
                      f"{DEFAULT_HEARTBEAT_PORT})")
    init.add_argument("--agent-port", type=_port, default=DEFAULT_AGENT_PORT,
                      help=f"TCP, host to host (default {DEFAULT_AGENT_PORT})")
    init.add_argument("--mgmt-port", type=_port, default=DEFAULT_MGMT_PORT,
                      help=f"TCP, the management API hactl uses (default {DEFAULT_MGMT_PORT})")
    init.add_argument("--host-sr", metavar="PATH",
                      help="the volume's path on the hosts, if not --sr's")
    init.add_argument("--vm-dir", default="vms", metavar="PATH",
                      help="the shared directory of the default guests' disks, as the hosts "
                      "see it (relative: to each host's directory)")
    init.add_argument("--pool", type=Path, metavar="FILE",
                      help="a pool file of the VMs to protect, listing the same hosts")
    init.add_argument("--host-memory", type=int, default=DEFAULT_HOST_MEMORY, metavar="MIB",
                      help=f"each host's memory for planning, without --pool (default "
                      f"{DEFAULT_HOST_MEMORY})")
    init.add_argument("--slots", type=int, default=0, metavar="N",
                      help="the pool's HA index space: hosts may join up to N "
                           f"(default: {DEFAULT_SLOTS} or the hosts given, if more)")
    init.add_argument("--force", action="store_true",
                      help="format an SR that holds data (another pool's, a file system)")
    init.add_argument("--allow-buffered", action="store_true",
                      help="accept an SR that refuses O_DIRECT (one machine only)")
    _add_host_parser(verbs)


def _add_host_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = verbs.add_parser(
        "add-host", help="write the files of one more host, waiting to join",
        description="Write DIR/hosts/NAME/ for a new host (its certificate from the pool CA, "
        "the pool key, secret, CA certificate and pool file, and a node.toml naming its own "
        "address): copy it to the host, start its daemon, and run 'hactl -s HOST:PORT "
        "pool-join master-address=MASTER'. Nothing is written when any input is refused.")
    add.add_argument("--pool", required=True, type=Path, metavar="DIR",
                     help="the directory 'hacluster pool init' wrote (it holds ca/)")
    add.add_argument("--address", required=True, metavar="ADDR",
                     help="the new host: IP or name, optional :PORT, A1/A2 for two networks")
    add.add_argument("--name", default="", help="its name (default: host<N>)")
    add.add_argument("--memory", type=int, default=0, metavar="MIB",
                     help="its memory for planning (default: the pool's first host's)")


def _out(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    if not DIRECTORY_NAME.fullmatch(args.name):
        raise ConfigError(f"--out is needed: the name {args.name!r} is not a directory name")
    return Path(args.name)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.pool_verb == "add-host":
        return _run_add_host(parser, args)
    try:
        request = InitRequest(
            name=args.name, hosts=tuple(parse_hosts(args.hosts, args.heartbeat_port)),
            sr=args.sr, out=_out(args), timeout=args.timeout, mode=args.mode,
            agent_port=args.agent_port, mgmt_port=args.mgmt_port, host_sr=args.host_sr,
            vm_dir=args.vm_dir, host_memory=args.host_memory, force=args.force,
            slots=args.slots,
            allow_buffered=args.allow_buffered,
            pool_file=poolfile.load(args.pool) if args.pool is not None else None)
        print(guide(init_pool(request)), end="")
    except (ConfigError, SRError, PoolError, TLSError, OSError) as error:
        parser.exit(2, f"hacluster pool init: {error}\n")
    return 0


def run_check(config: str) -> int:
    report = check_node(Path(config))
    print(report.render(), end="", flush=True)
    return 0 if report.ready else 1


def _run_add_host(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        added = add_host(AddHostRequest(args.pool, args.address, args.name, args.memory))
    except (ConfigError, PoolError, TLSError, OSError) as error:
        parser.exit(2, f"hacluster pool add-host: {error}\n")
    print(addhost_guide(added), end="")
    return 0
