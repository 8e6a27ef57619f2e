"""Shared fixtures and helpers: builders of reports and cores, waiting, chaos runs.

Markers (pyproject.toml): ``slow`` for real pools of node daemons (any
backend), ``netns`` for tests that need root, iproute2 and nftables (skipped
here, with the reason, without them), ``docker`` for the Docker engine.
``make test-fast`` leaves all three out.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from hacluster.core.messages import Phase, Report
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.timing import Timing
from hacluster.lab.poll import wait_until

GENERATION = 77
#: why the ``netns`` tests cannot run on this machine, or None
NETNS_MISSING = (None if os.geteuid() == 0 and shutil.which("nft") and shutil.which("ip")
                 else "needs root, iproute2 and nftables")
#: why the FUSE medium cannot be had on this machine, or None
FUSE_MISSING = (None if os.geteuid() == 0 and os.path.exists("/dev/fuse")
                and shutil.which("fusermount3") else "needs root, /dev/fuse and fusermount3")
SR_SIZE = 16 * 1024 * 1024


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``netns`` skip, saying why, where namespaces cannot be had."""
    if NETNS_MISSING is None:
        return
    for item in items:
        if item.get_closest_marker("netns") is not None:
            item.add_marker(pytest.mark.skip(reason=NETNS_MISSING))


@pytest.fixture
def config() -> CoreConfig:
    return CoreConfig(Timing.derive(5.0), hosts=3, generation=GENERATION)


def report(sender: int, seq: int, *, boot: int = 1, generation: int = GENERATION,
           phase: Phase = Phase.NORMAL, liveset: frozenset[int] = frozenset({0, 1, 2}),
           hb: frozenset[int] = frozenset({0, 1, 2}), sf: frozenset[int] = frozenset({0, 1, 2}),
           proposal: frozenset[int] | None = None) -> Report:
    return Report(generation=generation, sender=sender, boot=boot, seq=seq, phase=phase,
                  liveset=liveset, hbdomain=hb, sfdomain=sf,
                  statefile_access=sender in sf, proposal=proposal)


def armed_core(config: CoreConfig, me: int = 0, now: float = 100.0) -> HostCore:
    return HostCore(config, me, boot=1, now=now, liveset=frozenset(range(config.hosts)))


#: the ports labs of real processes take: below Linux's ephemeral range (32768 and
#: up), where no client socket is ever given one
LAB_PORTS = (10_000, 32_000)
LAB_PORT_SPAN = 3_200  # one lab: its base port up to the HTTP offset plus its hosts
_labs = itertools.count()


class BlackHole:
    """A TCP listener that accepts every connection, counts it and never answers: a
    network that swallows what it gets."""

    def __init__(self) -> None:
        self.accepted = 0

    async def listen(self, host: str) -> asyncio.Server:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            await asyncio.sleep(30)

        return await asyncio.start_server(swallow, host, 0)

    @staticmethod
    def port(server: asyncio.Server) -> int:
        return int(server.sockets[0].getsockname()[1])


def lab_base_port() -> int:
    """A base port for a lab of real processes: in this xdist worker's own band of
    :data:`LAB_PORTS` (another worker's lab never takes its ports), a different slot
    of the band for each lab in turn (two labs of one test never meet)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    band = (LAB_PORTS[1] - LAB_PORTS[0]) // max(1, workers)
    slots = max(1, band // LAB_PORT_SPAN)
    return LAB_PORTS[0] + worker * band + next(_labs) % slots * LAB_PORT_SPAN


def wait_for(check: Callable[[], bool], limit: float, what: str,
             evidence: Callable[[], object] | None = None) -> float:
    """Seconds until ``check()``; on a timeout the assertion says ``what``, and what
    ``evidence()`` shows then (a lab's status and last events)."""
    took = wait_until(check, limit)
    if took is None:
        seen = f"\n{evidence()}" if evidence is not None else ""
        raise AssertionError(f"timed out after {limit:g} s waiting for {what}{seen}")
    return took


def load_tool(name: str) -> ModuleType:
    """A script of ``tools/`` imported as a module (benchmarks are scripts, not package code)."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def assert_clean_chaos_run(directory: Path, backend: str, duration: float, rate: float,
                           timeout: float, least_faults: int) -> None:
    """``hacluster chaos`` with the seed of ``HACLUSTER_CHAOS_SEED`` (default 7) ends
    with no violation, having injected ``least_faults`` or more, and draws its timeline."""
    from hacluster.chaos.checker import check

    seed = int(os.environ.get("HACLUSTER_CHAOS_SEED", "7"))
    done = subprocess.run(
        [sys.executable, "-m", "hacluster", "chaos", "--backend", backend, "--duration",
         str(duration), "--rate", str(rate), "--seed", str(seed), "--timeout", str(timeout),
         "--dir", str(directory)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"seed {seed}:\n{done.stdout}\n{done.stderr}"
    assert "verdict: 0 violation(s)" in done.stdout
    assert len(check(directory).faults) >= least_faults, done.stdout  # faults were injected
    assert (directory / "timeline.png").read_bytes()[:4] == b"\x89PNG"


#: a valid node.toml for host 1 of three (the pool key file beside it: :func:`folder`)
NODE_TOML = """\
index = 1
hosts = ["127.0.0.1:7000", "127.0.0.2:7000", "[::1]:7001"]
sr = "sr.img"
key_file = "pool.key"
timeout = 5
status_socket = "s.sock"
"""
NODE_KEY = bytes.fromhex("ab" * 32)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A directory holding the pool key :data:`NODE_TOML` names."""
    (tmp_path / "pool.key").write_text(NODE_KEY.hex())
    return tmp_path


#: fake loop time for in-process asyncio tests. While a thread's job is pending
#: (the database's and backups' file I/O runs in threads), looptime cannot see it
#: and by default jumps to the next timer after a short real wait: on a loaded
#: machine a slow thread then looks as if it took seconds of loop time. With
#: ``idle_step=0`` loop time stands still while a thread works (the loop polls
#: until the thread is done), so thread work takes no loop time however loaded
#: the machine is, and the tests see the same order of events every run.
LOOPTIME = pytest.mark.looptime(idle_step=0)


def new_sr(path: Path, size: int = SR_SIZE) -> Path:
    """A zeroed file of ``size`` bytes at ``path`` (which must not exist)."""
    with path.open("xb") as out:
        out.truncate(size)
    return path


@pytest.fixture
def fuse_medium(tmp_path: Path) -> Iterator[Callable[[bool], tuple[Path, Path]]]:
    """``mount(refuse_direct)``: a 16 MiB SR file served by the FUSE fault layer
    (:mod:`hacluster.lab.faultfs`: a real file system the kernel serves, which can
    refuse O_DIRECT opens, fail, hang or slow every request), as ``(sr, control)``;
    every mount is undone afterwards. Without root, /dev/fuse and fusermount3 the
    test skips, saying why."""
    if FUSE_MISSING is not None:
        pytest.skip(FUSE_MISSING)
    mounts: list[tuple[Path, subprocess.Popen[bytes]]] = []

    def mount(refuse_direct: bool) -> tuple[Path, Path]:
        where = tmp_path / f"fuse{len(mounts)}"
        where.mkdir()
        backing = new_sr(tmp_path / f"backing{len(mounts)}")
        process = subprocess.Popen(
            [sys.executable, "-m", "hacluster.lab.faultfs", "--backing", str(backing),
             "--mount", str(where), *(["--refuse-direct"] if refuse_direct else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        mounts.append((where, process))
        host = where / "0"  # the layer serves one directory per host
        if wait_until(lambda: (host / "control").exists() or process.poll() is not None,
                      10) is None or not (host / "control").exists():
            pytest.fail("the FUSE layer did not start")
        return host / "sr", host / "control"

    try:
        yield mount
    finally:
        for where, process in mounts:
            subprocess.run(["fusermount3", "-u", "-z", str(where)], check=False,
                           capture_output=True)
            process.kill()
            process.wait(10)
