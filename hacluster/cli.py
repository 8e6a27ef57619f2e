"""The ``hacluster`` command line.

Subcommands:

* ``simulate``: random fault schedules under the checker, or one named
  scenario with its timeline.
* ``demo``: a 3-host pool whose master crashes, told step by step.
* ``plan`` and ``diagnostic-vm-status``: failover planning of a pool file or a
  synthetic pool.
* ``pool init``: a new pool's files and SR for real hosts; ``node --check``:
  whether a host is ready (:mod:`hacluster.deploy`).
"""

from __future__ import annotations

import argparse
import os
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from hacluster import __version__
from hacluster.core.node import Mode
from hacluster.core.timing import Timing
from hacluster.mgmt.pipes import quiet_on_closed_pipe

if TYPE_CHECKING:  # the simulator is loaded only by the commands that run it
    from hacluster.sim.scenarios import ScenarioResult
    from hacluster.sim.schedules import ScheduleResult

MAX_HOSTS = 256


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _host_or_all(text: str) -> int | None:
    """A host number, or ``all`` (None): every host of the lab."""
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a host number or 'all', got {text!r}") \
            from None


def _timeout(text: str) -> float:
    try:
        value = float(text)
        Timing.derive(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _host_group(text: str) -> list[int]:
    try:
        hosts = [int(word) for word in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a group is host numbers with commas, like 0,1; "
                                         f"got {text!r}") from None
    if any(host < 0 for host in hosts):
        raise argparse.ArgumentTypeError(f"host numbers are 0 or more, got {text!r}")
    return hosts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hacluster", description="High-availability cluster manager."
    )
    parser.add_argument("--version", action="version", version=f"hacluster {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate",
        help="attack the decision core with random fault schedules or a named scenario",
        description="Run seeded fault schedules against simulated pools and check "
        "the safety properties; or run one named scenario and print its timeline.",
    )
    sim.add_argument("--hosts", type=_positive_int, default=5, help="hosts per pool (1-256)")
    sim.add_argument("--schedules", type=_positive_int, default=100,
                     help="random schedules to run")
    sim.add_argument("--seed", type=int, default=1, help="seed of the first schedule")
    sim.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.STATEFILE.value,
                     help="statefile (heartbeat SR) or clustered (network quorum only)")
    sim.add_argument("--timeout", type=_timeout, default=5.0, help="HA timeout T in seconds")
    sim.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1,
                     help="worker processes")
    sim.add_argument("--list-scenarios", action="store_true", help="list named scenarios")
    sim.add_argument("--pool", help="what-if: a pool file (TOML; hosts in HA index order) to "
                     "run under --fail/--partition instead of random schedules")
    sim.add_argument("--pool-json", help=argparse.SUPPRESS)  # the same as JSON; - is stdin
    sim.add_argument("--fail", default="", help="what-if: hosts that crash, by name "
                     "(e.g. host1,host2)")
    sim.add_argument("--partition", default="", help="what-if: groups of hosts the network "
                     "splits into, by name (e.g. host0,host1/host2)")
    sim.add_argument("--json", action="store_true", help="what-if: print the prediction as JSON")
    sim.add_argument("--scenario", help="run one named scenario and print its timeline")

    demo = sub.add_parser("demo", help="watch a 3-host pool fail over after its master crashes")
    demo.add_argument("--timeout", type=_timeout, default=3.0, help="HA timeout T in seconds")
    demo.add_argument("--simulated", action="store_true",
                      help="use the simulator instead of real local processes")

    plan = sub.add_parser("plan", help="the recovery plan and the host failures a pool can take",
                          description="Compute max_host_failures_to_tolerate (exact, or a "
                          "proven bound), the plan for every single-host failure and memory "
                          "by restart priority.")
    plan.add_argument("--pool", help="a pool file (TOML)")
    plan.add_argument("--random-pool", metavar="HOSTS:VMS",
                      help="a synthetic pool generated from --seed, e.g. 64:8000")
    plan.add_argument("--seed", type=int, default=1, help="seed of --random-pool, e.g. 7")
    plan.add_argument("--targets", action="store_true",
                      help="list every scenario with the target host of each VM")
    plan.add_argument("--json", action="store_true", help="machine-readable output")

    diag = sub.add_parser("diagnostic-vm-status",
                          help="why a VM is or is not agile (restartable elsewhere)")
    diag.add_argument("--pool", required=True, help="a pool file (TOML)")
    diag.add_argument("--vm", required=True, help="the VM's uuid")

    node = sub.add_parser("node", help="run the node daemon, or check a host (--check)")
    node.add_argument("--config", required=True, help="node.toml")
    node.add_argument("--armed", action="store_true",
                      help="start armed with the whole pool (HA enable); else join")
    node.add_argument("--check", action="store_true",
                      help="check the configuration, the SR and the timing, print a report "
                      "and exit (0: ready, 1: not) without starting anything")

    check = sub.add_parser("health", help="ask a node on this host for its /health: exit 0 "
                           "if healthy (armed and NORMAL), 1 if not (for HEALTHCHECK)")
    check.add_argument("--config", type=Path, default=None,
                       help="its node.toml (default: that of the node daemon running here)")

    status = sub.add_parser("status", help="show a running node's status")
    status.add_argument("--socket", required=True, help="the node's status socket")

    fmt = sub.add_parser("sr-format", help="lay out a heartbeat SR on a file or block device")
    fmt.add_argument("path", help="the file or block device, e.g. /dev/sdb or sr.img")
    fmt.add_argument("--hosts", type=_positive_int, required=True,
                     help="the slots to lay out, one per host the pool may hold, e.g. 16")
    fmt.add_argument("--key-file", required=True, help="pool key (32 bytes, raw or hex)")

    chaos = sub.add_parser(
        "chaos", help="seeded faults against a real pool, judged from the guests' disks",
        description="Bring up a pool (netns: namespaces, root; docker: containers), inject "
        "a seeded random fault schedule, then check that no VM ran on two hosts at once and "
        "that every protected VM ran again after every fault. Writes a report and a "
        "timeline PNG into --dir.")
    chaos.add_argument("--backend", choices=["netns", "docker"], default="netns",
                       help="netns: namespaces on this machine (root); docker: containers")
    chaos.add_argument("--hosts", type=_positive_int, default=3, help="pool size, e.g. 5")
    chaos.add_argument("--timeout", type=_timeout, default=3.0, help="HA timeout T in seconds")
    chaos.add_argument("--duration", type=_positive_float, default=300.0,
                       help="seconds of faults")
    chaos.add_argument("--rate", type=_positive_float, default=4.0,
                       help="faults per minute (mean; the pool settles between faults)")
    chaos.add_argument("--seed", type=int, default=1,
                       help="seed of the fault schedule (print it, to replay a run)")
    chaos.add_argument("--dir", default=".hacluster-chaos",
                       help="run directory (a finished run there is replaced)")
    chaos.add_argument("--keep", action="store_true", help="leave the pool up afterwards")
    chaos.add_argument("--check", metavar="DIR",
                       help="only judge the finished run in DIR again")
    chaos.add_argument("--unsafe-watchdog-delay", type=float, metavar="SECONDS",
                       help="TESTS ONLY: plant a watchdog that fires this much later than the "
                       "fence window assumes, so the checker can be seen to catch the "
                       "split brain it causes")

    lab = sub.add_parser("lab", help="a pool of real node processes on this machine")
    lab.add_argument("--dir", default=".hacluster-lab",
                     help="lab directory (default: %(default)s; also accepted after the verb)")
    verbs = lab.add_subparsers(dest="verb", required=True)
    after_verb = argparse.ArgumentParser(add_help=False)  # --dir may also follow the verb
    after_verb.add_argument("--dir", default=argparse.SUPPRESS,
                            help="lab directory (default: .hacluster-lab)")

    def lab_verb(name: str, help: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help, parents=[after_verb])

    up = lab_verb("up", help="format an SR and start an armed pool")
    up.add_argument("--backend", choices=["local", "netns", "docker"], default="local",
                    help="local: processes on 127.0.0.x, no root; netns: namespaces (root); "
                    "docker: a container per host (tools/build-image.sh)")
    up.add_argument("--hosts", type=_positive_int, default=3, help="pool size, e.g. 5")
    up.add_argument("--timeout", type=_timeout, default=3.0,
                    help="HA timeout T in seconds, e.g. 10")
    up.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.STATEFILE.value,
                    help="statefile (heartbeat SR) or clustered (network quorum only)")
    up.add_argument("--networks", type=_positive_int, default=1,
                    help="heartbeat networks per host (local: 2 adds IPv6 loopback)")
    up.add_argument("--pool", help="a pool file of the VMs to protect (default: demo VMs)")
    up.add_argument("--ha-off", action="store_true",
                    help="start the hosts with HA disabled (enable it with hactl)")
    up.add_argument("--sr", choices=["file", "iscsi"], default="file",
                    help="file: the SR is a file in the lab directory; iscsi (local backend, "
                    "root): that file served by a tgt iSCSI target, each host logged in "
                    "with its own initiator (docs/deploy.md)")
    up.add_argument("--slots", type=_positive_int, default=0,
                    help="the pool's HA index space: hosts may join up to it "
                    "(default: 16, or the hosts if more)")
    lab_verb("join", help="start one more host and make it a member (hactl pool-join)")
    lab_verb("eject", help="eject a host from the pool (hactl pool-eject)").add_argument(
        "host", type=int, help="its index, e.g. 2")
    lab_verb("status", help="every host's status").add_argument(
        "--json", action="store_true", help="every host's full status, as JSON")
    lab_verb("events", help="every host's events, merged in time order")
    lab_verb("down", help="stop every host and forget the lab")
    for verb, text in (("kill", "SIGKILL a host and all it runs (all: every host, a "
                                "power cut)"),
                       ("restart", "start a stopped host again, joining (all: every stopped "
                                   "host; after kill all the pool re-forms by itself)")):
        v = lab_verb(verb, help=text)
        v.add_argument("host", type=_host_or_all, help="a host number, or all")
    pause = lab_verb("pause", help="SIGSTOP a host's daemon, then SIGCONT")
    pause.add_argument("host", type=int, help="its index, e.g. 2")
    pause.add_argument("seconds", type=_positive_float, help="how long, e.g. 10")
    for verb, text in (("disconnect", "docker: take a host off the lab network"),
                       ("reconnect", "docker: put a host back on the lab network")):
        lab_verb(verb, help=text).add_argument("host", type=int, help="its index, e.g. 2")
    partition = lab_verb("partition", help="netns: cut the network into groups of hosts")
    partition.add_argument("groups", nargs="+", type=_host_group, metavar="GROUP",
                           help="comma-separated host numbers, two groups or more: 0,1 2,3,4")
    drop = lab_verb("drop-from", help="netns: PEER stops hearing HOST (one way)")
    drop.add_argument("host", type=int, help="the host no longer heard, e.g. 2")
    drop.add_argument("peer", type=int, help="the host that stops hearing it, e.g. 0")
    cut = lab_verb("cut", help="netns: every host loses everything arriving on one network "
                   "(lab up --networks 2)")
    cut.add_argument("network", type=int, help="0 (the first) or 1")
    lab_verb("heal", help="netns: mend every network cut")
    storage = lab_verb("storage", help="netns: fail one host's view of the SR")
    storage.add_argument("host", type=int, help="its index, e.g. 2")
    storage.add_argument("fault", choices=["error", "hang", "slow", "ok"],
                         help="error: I/O errors; hang: no answer; slow: late; ok: mended")
    from hacluster.deploy import command as deploy
    from hacluster.lab import compose

    deploy.add_parser(sub)
    compose.add_parser(sub)
    _show_defaults(parser)
    return parser


class _WithDefaults(argparse.HelpFormatter):
    """An option's help ends with its default, unless it names one already or has none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text or not action.option_strings
                or action.default in (None, False, argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every parser and sub-parser's help shows each option's default."""
    parser.formatter_class = _WithDefaults
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _show_defaults(child)


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "compose":
        from hacluster.lab import compose

        return compose.run(parser, args)
    if args.command == "demo":
        if args.simulated:
            return _demo(args.timeout)
        from hacluster.lab.demo import run_demo

        return run_demo(args.timeout)
    if args.command in ("plan", "diagnostic-vm-status"):
        return _planning(parser, args)
    if args.command == "chaos":
        from hacluster.chaos import command

        return command.run_command(parser, args)
    if args.command == "pool":
        from hacluster.deploy import command as deploy

        return deploy.run(parser, args)
    if args.command == "health":
        from hacluster.node.healthcheck import check

        code, text = check(args.config)
        print(text)
        return code
    if args.command in ("node", "status", "sr-format", "lab"):
        from hacluster.lab.commands import run_command

        return run_command(parser, args)
    from hacluster.sim.scenarios import SCENARIOS, run_scenario

    if args.pool is not None or args.pool_json is not None:
        from hacluster.mgmt.whatif import run_whatif

        return run_whatif(parser, args)
    if args.list_scenarios:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:28} {scenario.summary}")
        return 0
    if args.scenario is not None:
        if args.scenario not in SCENARIOS:
            parser.error(f"unknown scenario {args.scenario!r}; --list-scenarios lists them")
        return _print_scenario(run_scenario(SCENARIOS[args.scenario], args.seed, args.timeout))
    if args.hosts > MAX_HOSTS:
        parser.error(f"--hosts must be at most {MAX_HOSTS}, got {args.hosts}")
    return _simulate(args.hosts, args.schedules, args.seed, Mode(args.mode), args.timeout,
                     args.jobs)


def _planning(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hacluster.core.pool import PoolError, diagnostic_vm_status
    from hacluster.model import poolfile
    from hacluster.model.plan_command import run_plan

    try:
        if args.command == "plan":
            return run_plan(args.pool, args.random_pool, args.seed, args.targets, args.json)
        print("\n".join(diagnostic_vm_status(poolfile.load(args.pool).pool, args.vm)))
        return 0
    except PoolError as error:
        parser.exit(2, f"hacluster {args.command}: {error}\n")


def _one(job: tuple[int, int, str, float]) -> ScheduleResult:
    from hacluster.sim.schedules import ScheduleResult, run_schedule

    hosts, seed, mode, timeout = job
    try:
        return run_schedule(hosts, seed, Mode(mode), timeout)
    except Exception:  # a crash of the core is a finding, reported with its seed
        return ScheduleResult(hosts, Mode(mode), seed, [],
                              violations=["CRASH " + traceback.format_exc()])


def _simulate(hosts: int, schedules: int, seed: int, mode: Mode, timeout: float,
              jobs: int) -> int:
    work = [(hosts, seed + i, mode.value, timeout) for i in range(schedules)]
    violations = 0
    simulated = 0.0
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for result in pool.map(_one, work, chunksize=4):
            simulated += result.simulated
            if not result.ok:
                violations += 1
                print(result.report(), flush=True)
                print(flush=True)
    print(f"simulated {simulated:.0f}s of pool time, hosts={hosts} mode={mode.value} "
          f"T={timeout}s first seed={seed}")
    print(f"schedules: {schedules} violations: {violations}")
    return 1 if violations else 0


def _print_scenario(result: ScenarioResult) -> int:
    s = result.scenario
    print(f"scenario {s.name}: {s.summary}")
    print(f"hosts={s.hosts} mode={s.mode.value} T={result.sim.timing.T}s "
          f"fault at {result.fault_at:.1f}s")
    print()
    for line in result.sim.trace.lines():
        print(line)
    print()
    print(f"expected survivors {sorted(s.survivors)}, fenced {sorted(s.fenced)}")
    print(f"got      survivors {sorted(result.sim.survivors())}, "
          f"fenced {sorted(result.sim.fenced())}, master {sorted(result.sim.masters())}")
    if result.commit_at is not None:
        print(f"fault to commit: {result.commit_at - result.fault_at:.2f}s "
              f"(bound {result.bound:.2f}s)")
    for violation in result.violations:
        print(violation)
    print("outcome: " + ("as predicted" if result.ok else "VIOLATION"))
    return 0 if result.ok else 1


def _demo(timeout: float) -> int:
    print("hacluster demo: a 3-host pool (simulated hosts, the real decision core).")
    print("Host 0 becomes master and places 6 VMs; then host 0 crashes.")
    print("Watch the survivors suspect it, agree, wait the fence window, commit,")
    print("elect host 1 master and restart host 0's VMs.\n")
    from hacluster.sim.scenarios import SCENARIOS, run_scenario

    return _print_scenario(run_scenario(SCENARIOS["master-crash"], 1, timeout))
