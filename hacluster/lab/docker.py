"""The ``docker`` lab backend: one container per host, from the project image.

Rules:

* Host ``i`` is the container ``hacluster<lab>-h<i>`` with the static address
  ``172.30.<lab>.(i+2)`` on the user-defined bridge network ``hacluster<lab>``
  (subnet ``172.30.<lab>.0/24``, the engine's gateway ``.1`` is this
  machine's side, so hactl here reaches every host). The lab id is chosen
  free of every docker network and route, as the netns backend does.
* The lab directory is bind-mounted at the same path in every container, so
  everything :class:`~hacluster.lab.local.LocalLab` writes and reads works
  unchanged: node.toml's relative paths, the shared heartbeat SR file
  (O_DIRECT), the guests' disks in ``vm-sr/``, the status sockets (Unix
  sockets work across the bind mount) and ``events.jsonl``. Provisioning and
  configuration are LocalLab's; only the addressing differs.
* A container runs ``hacluster node`` under the engine's init (``--init``),
  never ``--armed``: ``up`` starts every host with HA off and enables HA
  through the management API, as an operator does (``hactl
  pool-ha-enable``), so ``docker start`` or ``docker restart`` of a stopped or
  fenced host makes it rejoin. A fenced daemon exits (75) and its container
  stops; ``docker kill`` is a manual stop; no restart policy revives either.
* Faults: ``kill`` (docker kill: the kernel kills all the container runs),
  ``pause`` (SIGSTOP of the daemon alone, as on the other backends: its
  watchdog fires), ``freeze`` (docker pause of the whole container, watchdog
  included; thawed past the stall limit, the daemon fences), ``disconnect``/``reconnect``
  (off the network and back with the same address), ``restart_container``
  (docker restart: SIGTERM, a clean leave, then a rejoin).
* Docker or the image missing is a :class:`LabError` saying what to run
  (``tools/build-image.sh``). ``down`` removes the containers and the network.
* The same addressing serves ``docker compose`` (:mod:`hacluster.lab.compose`):
  there the network prefix is given (``net``) instead of chosen.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hacluster.lab.local import BridgedLab, LabError
from hacluster.lab.netns import daemon_pid
from hacluster.lab.poll import wait_until

IMAGE_ENV = "HACLUSTER_IMAGE"
DEFAULT_IMAGE = "hacluster:latest"
PREFIX = "172.30"
ALREADY_ENABLED = "already enabled"


def host_ip(net: str, index: int) -> str:
    """Host ``index``'s address on the /24 ``net`` (``.1`` is the engine's gateway)."""
    return f"{net}.{index + 2}"


def docker(*words: str, check: bool = True, timeout: float = 120) -> str:
    """Run ``docker WORDS``; its stdout, or a :class:`LabError` with its stderr."""
    try:
        done = subprocess.run(["docker", *words], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise LabError("the docker command is missing: install Docker "
                       "(docs/containers.md)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"docker {' '.join(words)} took more than {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise LabError(f"docker {' '.join(words)} failed: "
                       f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def image() -> str:
    return os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)


def check_docker() -> None:
    """Refuse clearly when the engine does not answer or the image is missing."""
    if shutil.which("docker") is None:
        raise LabError("the docker command is missing: install Docker (docs/containers.md)")
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0 or not done.stdout.strip():
        raise LabError("the Docker engine does not answer (docker info failed): start dockerd")
    if subprocess.run(["docker", "image", "inspect", image()], capture_output=True,
                      check=False, timeout=30).returncode != 0:
        raise LabError(f"no image {image()}: run tools/build-image.sh")


def taken_prefixes() -> str:
    """Every docker network's subnet and this machine's routes, as one text."""
    names = docker("network", "ls", "-q").split()
    subnets = docker("network", "inspect", "--format",
                     "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *names) if names else ""
    routes = subprocess.run(["ip", "-o", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=False).stdout if shutil.which("ip") else ""
    return subnets + "\n" + routes


def enable_ha(config: Path, timeout: float, wait: float, log: bool = False) -> str:
    """``hactl pool-ha-enable ha-config:timeout=T``, retried until the hosts answer.

    Idempotent: HA already enabled counts as done. Returns hactl's output;
    raises :class:`LabError` with hactl's last word after ``wait`` seconds or
    at once on a usage error (exit 2)."""
    deadline = time.monotonic() + wait
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "hacluster.mgmt.hactl", "--config", str(config),
             "pool-ha-enable", f"ha-config:timeout={timeout:g}"],
            capture_output=True, text=True, check=False, timeout=wait + 60)
        said = (done.stdout + done.stderr).strip()
        if done.returncode == 0:
            return said
        if ALREADY_ENABLED in said:
            return "HA is already enabled"
        if done.returncode == 2 or time.monotonic() > deadline:
            raise LabError(f"hactl pool-ha-enable failed: {said}")
        if log:
            print(f"waiting for the hosts: {said.splitlines()[-1] if said else done.returncode}",
                  file=sys.stderr, flush=True)
        time.sleep(1)


class DockerLab(BridgedLab):
    backend = "docker"

    # ------------------------------------------------------------ naming
    @property
    def net(self) -> str:
        """The first three octets of the lab's /24, e.g. ``172.30.7``."""
        data = self.load()
        return str(data.get("net") or f"{PREFIX}.{data.get('lab_id', 0)}")

    def network(self) -> str:
        return f"hacluster{self.lab_id}"

    def container(self, index: int) -> str:
        return f"hacluster{self.lab_id}-h{index}"

    def ip(self, index: int, network: int = 0) -> str:
        return host_ip(self.net, index)

    # ------------------------------------------------------------ set up
    def prepare(self, hosts: int) -> None:
        check_docker()
        data = self.load()
        for _ in range(5):  # another lab may take the same id between look and create
            lab_id = int(free_prefix(PREFIX).rpartition(".")[2])
            created = subprocess.run(
                ["docker", "network", "create", "--driver", "bridge",
                 "--subnet", f"{PREFIX}.{lab_id}.0/24", "--gateway", f"{PREFIX}.{lab_id}.1",
                 "--label", f"org.hacluster.lab={self.root.resolve()}",
                 f"hacluster{lab_id}"], capture_output=True, text=True, check=False)
            if created.returncode == 0:
                data["lab_id"] = lab_id
                self.save(data)
                return
        raise LabError(f"cannot create a lab network: {created.stderr.strip()}")

    def prepare_host(self, index: int) -> None:
        raise LabError("joins are not supported on the docker backend yet: use local or netns")

    def up(self, hosts: int, timeout: float, base_port: int = 17000, networks: int = 1,
           mode: str = "statefile", pool: Path | None = None, ha_off: bool = False,
           unsafe_watchdog_delay: float | None = None, guest_lock: bool = True,
           slots: int = 0, sr: str = "file") -> None:
        """Every host started with HA off, then HA enabled through the management API."""
        self._check_sr(sr)
        check_docker()
        super().up(hosts, timeout, base_port, networks, mode, pool, ha_off=True,
                   unsafe_watchdog_delay=unsafe_watchdog_delay, guest_lock=guest_lock,
                   slots=slots, sr=sr)
        try:
            if wait_until(lambda: all(r.get("phase") == "HA_OFF" for r in self.status()),
                          120, poll=0.2) is None:
                raise LabError(f"the hosts did not all start: see {self.root}/host*/node.out")
            if not ha_off:
                enable_ha(self.root / "hactl.toml", timeout, wait=120)
                if wait_until(lambda: any(r.get("master") for r in self.status()),
                              15 * timeout, poll=0.2) is None:
                    raise LabError("HA enabled but no master was elected")
        except BaseException:
            self.down()
            raise

    def start(self, index: int, armed: bool = False) -> int:
        """Run host ``index``'s container, or start it again if it exists.

        Never armed (``armed`` is ignored): the container's command must make
        a restarted host rejoin; HA is enabled through the management API."""
        data = self.load()
        self._check(index, data)
        name = self.container(index)
        if self._state(index) is not None:
            docker("start", name)
            return 0
        root = str(self.root.resolve())
        directory = self.host_dir(index).resolve()
        command = (f"exec hacluster node --config {directory / 'node.toml'} "
                   f">>{directory / 'node.out'} 2>&1")
        docker("run", "-d", "--init", "--name", name, "--hostname", f"host{index}",
               "--network", self.network(), "--ip", self.ip(index),
               "--user", f"{os.getuid()}:{os.getgid()}",
               "--label", f"org.hacluster.lab={root}",
               "-v", f"{root}:{root}", "-w", str(directory),
               image(), "sh", "-c", command)
        return 0

    def teardown(self, data: dict[str, Any]) -> None:
        lab_id = data.get("lab_id")
        if lab_id is None:
            return
        names = [f"hacluster{lab_id}-h{i}" for i in range(data["hosts"])]
        docker("rm", "-f", *names, check=False)
        docker("network", "rm", f"hacluster{lab_id}", check=False)

    # ------------------------------------------------------------ state
    def _state(self, index: int) -> dict[str, bool] | None:
        """The container's Running and Paused flags, or None if there is none."""
        done = subprocess.run(
            ["docker", "inspect", "--type", "container", "--format",
             "{{.State.Running}} {{.State.Paused}}", self.container(index)],
            capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            return None
        running, paused = done.stdout.split()
        return {"running": running == "true", "paused": paused == "true"}

    def running(self, index: int) -> bool:
        """Whether host ``index``'s container runs (paused counts as running)."""
        state = self._state(index)
        return state is not None and state["running"]

    def exit_code(self, index: int) -> int | None:
        """The exit status of a stopped container (75: fenced), else None."""
        if self._state(index) is None or self.running(index):
            return None
        return int(docker("inspect", "--format", "{{.State.ExitCode}}",
                          self.container(index)).strip())

    # ------------------------------------------------------------ chaos
    def kill(self, index: int) -> None:
        """SIGKILL the container's init: the kernel kills everything it runs."""
        self._check(index, self.load())
        if self.running(index):
            docker("kill", self.container(index), check=False)

    def pid(self, index: int) -> int:
        """The host-side pid of the container's init (0 when it is not running)."""
        self._check(index, self.load())
        return int(docker("inspect", "--format", "{{.State.Pid}}",
                          self.container(index)).strip())

    def pause(self, index: int, seconds: float) -> None:
        """SIGSTOP the daemon alone, as on the other backends: its watchdog, a
        separate process, fires after Wh and the host fences."""
        self._signal_pause(daemon_pid(self.pid(index), index), seconds)

    def freeze(self, index: int, seconds: float) -> None:
        """docker pause the whole container (daemon, watchdog, VMs), then thaw it.

        The watchdog is frozen too: past the stall limit only the daemon's own
        stall check, on thawing, fences the host."""
        self._check(index, self.load())
        docker("pause", self.container(index))
        try:
            time.sleep(seconds)
        finally:
            docker("unpause", self.container(index), check=False)

    def disconnect(self, index: int) -> None:
        """Take host ``index`` off the lab network (it keeps its SR and disks)."""
        self._check(index, self.load())
        docker("network", "disconnect", self.network(), self.container(index))

    def reconnect(self, index: int) -> None:
        """Put host ``index`` back on the lab network with its own address."""
        self._check(index, self.load())
        docker("network", "connect", "--ip", self.ip(index), self.network(),
               self.container(index))

    def restart_container(self, index: int) -> None:
        """docker restart: SIGTERM (the host leaves cleanly), then it starts and rejoins."""
        self._check(index, self.load())
        docker("restart", self.container(index))

    def network_fault(self, verb: str) -> None:
        raise LabError(f"'{verb}' needs the netns backend; the docker backend has "
                       "disconnect HOST and reconnect HOST")


def free_prefix(base: str) -> str:
    """A random /24 prefix ``base.N`` (N in 1..254) no docker network or route uses."""
    taken = taken_prefixes()
    free = [n for n in range(1, 255) if f"{base}.{n}." not in taken]
    if not free:
        raise LabError(f"no free /24 in {base}.0.0/16")
    prefix = f"{base}.{free[int.from_bytes(os.urandom(2), 'big') % len(free)]}"
    try:
        ipaddress.ip_network(f"{prefix}.0/24")
    except ValueError:
        raise LabError(f"{base} is not the first two octets of an IPv4 address") from None
    return prefix

