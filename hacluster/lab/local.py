"""The ``local`` lab backend: N node processes on 127.0.0.x sharing an SR file.

Rules:

* Needs no root: host ``i`` listens on ``127.0.0.(i+1)`` and the heartbeat SR
  is a sparse file in the lab directory, which holds everything else too
  (pool key, configs, logs, status sockets, pids).
* Every node runs in its own session, so ``kill`` takes the daemon and all it
  started (SIGKILL to the group) and its watchdog lives on to report it.
* ``up`` formats the SR with a fresh generation and starts every node armed
  (the HA enable), or with ``ha_off`` leaves HA disabled for the operator to
  enable (``hactl pool-ha-enable``); ``restart`` starts one node joining, as
  after a fence. ``kill_all`` is a power cut; ``restart_all`` starts every
  stopped node joining, and with no armed host left they cold-start.
  Both start hosts in waves, a few more than the machine's cores at a time
  (the next when one is up), so that a 64-host lab on 2 cores starts in
  order instead of all late (HA enable then waits for the last of them).
* Every lab is a managed pool: a pool CA and a certificate per host
  (``tls/``), a pool secret, the management API on ``base_port + 2000``, the
  HTTP face (health, metrics, status page) on ``base_port + 3000`` and
  ``hactl.toml`` in the lab directory (``hactl --config DIR/hactl.toml ...``).
* Every host keeps its own copy of the pool key (``hostN/pool.key``, made from
  the lab's ``pool.key``), as real hosts do: a key rotation
  (``hactl pool-key-rotate``) rewrites each host's files in turn.
* The lab's files are written by :mod:`hacluster.deploy.poolfiles` and its SR
  checked and formatted by :mod:`hacluster.storage.volume`, as ``hacluster pool
  init`` does for real hosts: the pool key, the pool secret and every private
  key are created mode 0600, never wider for a moment. The pool CA's private
  key never enters the lab directory, which containers mount: it is kept
  beside it, in :attr:`LocalLab.ca_key_dir` (``DIR-ca``, mode 0700), and only
  ``tls/ca.pem`` is copied in.
* Beside the SR every lab has an empty spare one (``spare.sr``, uuid
  ``spare-sr`` in every ``node.toml``'s ``heartbeat_srs``; not with ``--sr
  iscsi``): ``hactl pool-ha-enable heartbeat-sr-uuids=spare-sr`` moves the pool
  onto it.
* Network faults need network namespaces: this backend refuses them clearly.
* ``up(sr="iscsi")`` (root) serves the SR file as an iSCSI LUN and points each
  host at its own initiator's view of it (:mod:`hacluster.lab.iscsi`);
  ``down`` stops them. It is checked before anything is created.
* Every lab protects VMs (:mod:`hacluster.lab.workloads`): the pool file is
  written and checked first, and each node runs its VMs as guest programs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacluster.core.pool import PoolError
from hacluster.deploy import poolfiles
from hacluster.deploy.init import DEFAULT_SLOTS
from hacluster.deploy.poolfiles import NodeSettings
from hacluster.lab.poll import wait_until
from hacluster.lab.workloads import VM_SR, write_pool
from hacluster.mgmt.tls import CA_CERT_FILE, CA_KEY_FILE, CertFiles
from hacluster.model.address import Address
from hacluster.node.daemon import query_status
from hacluster.node.keyfiles import read_key
from hacluster.storage.sr import PoolState, max_pool_hosts
from hacluster.storage.volume import create_sr_file, format_volume, new_generation, probe, require

SR_FILE = "heartbeat.sr"  # sparse: the heartbeat region and 8 MiB of metadata region
SPARE_SR_FILE = "spare.sr"  # an empty volume the pool may move its heartbeat SR to
SPARE_SR = "spare-sr"  # its uuid (node.toml's heartbeat_srs)


def members(data: dict[str, Any]) -> list[int]:
    """The lab's member indices (every host until a join or an eject changed them)."""
    return list(data.get("members", range(data["hosts"])))


KILL_WAIT = 10.0  # seconds kill_all waits for the killed daemons to be gone
#: hosts a lab starts at once (the rest wait until one is up): twice the cores
STARTING_AT_ONCE = 2 * (os.cpu_count() or 1)
START_WAIT = 30.0  # seconds a host may take to start before the next starts anyway
ALERT_DIR = "alerts"  # the lab's alert scripts (other-config:alert-script), for every host
ANSWER_WAIT = 120.0  # seconds lab up waits for every host's management API
#: each host's ports above the lab's base port: its agent, management API and HTTP face
AGENT_PORT_OFFSET, MGMT_PORT_OFFSET, HTTP_PORT_OFFSET = 1000, 2000, 3000


class LabError(RuntimeError):
    """A lab operation that cannot be done, with what to do instead."""


@dataclass
class LocalLab:
    root: Path

    @property
    def meta(self) -> Path:
        return self.root / "lab.json"

    def load(self) -> dict[str, Any]:
        if not self.meta.exists():
            raise LabError(f"no lab in {self.root}: run 'hacluster lab up' first")
        data: dict[str, Any] = json.loads(self.meta.read_text())
        return data

    def save(self, data: dict[str, Any]) -> None:
        self.meta.write_text(json.dumps(data, indent=2))

    def host_dir(self, index: int) -> Path:
        return self.root / f"host{index}"

    @property
    def ca_key_dir(self) -> Path:
        """Where the pool CA (with its private key) is kept: beside the lab directory,
        never in it, so no container that mounts the lab directory can read the key."""
        root = self.root.resolve()
        return root.parent / f"{root.name}-ca"

    @property
    def ca(self) -> CertFiles:
        """The pool CA: its certificate in the lab directory, its key outside it."""
        return CertFiles(self.root / "tls" / CA_CERT_FILE, self.ca_key_dir / CA_KEY_FILE)

    # ------------------------------------------------------------ lifecycle
    backend = "local"

    # ------------------------------------------------------------ backend hooks
    #: heartbeat networks a host can have: IPv4, then IPv6 loopback
    networks = 2

    def ip(self, index: int, network: int = 0) -> str:
        """Host ``index``'s IP on heartbeat network ``network``: 127.0.0.(i+1), then ::1."""
        return f"127.0.0.{index + 1}" if network == 0 else "::1"

    def port(self, index: int, base_port: int, network: int) -> int:
        """Its heartbeat port: one per host (they share ::1), 500 up on IPv6."""
        return base_port + 500 * network + index

    def address(self, index: int, base_port: int, network: int = 0) -> Address:
        """Host ``index`` on heartbeat network ``network``."""
        if not 0 <= network < self.networks:
            plural = "s" if self.networks > 1 else ""
            raise LabError(f"the {self.backend} backend gives a host at most {self.networks} "
                           f"heartbeat network{plural}, not {network + 1}")
        return Address(self.ip(index, network), self.port(index, base_port, network))

    def prepare(self, hosts: int) -> None:
        """Create what the hosts need besides their files (nothing, locally)."""

    def prepare_host(self, index: int) -> None:
        """Create what one more host needs besides its files (a join; nothing, locally)."""

    def release_host(self, index: int) -> None:
        """Undo :meth:`prepare_host` (an eject: the index may be joined again)."""

    def sr_path(self, index: int) -> str:
        """The SR as host ``index`` opens it, relative to its directory: the lab's file,
        or with ``--sr iscsi`` this host's own initiator's view of the LUN."""
        if self.load().get("iscsi"):
            from hacluster.lab.iscsi import HOST_SR

            return HOST_SR
        return f"../{SR_FILE}"

    def wrap(self, index: int, command: list[str]) -> list[str]:
        return command

    def teardown(self, data: dict[str, Any]) -> None:
        """Undo :meth:`prepare`."""

    # ------------------------------------------------------------ lifecycle
    def up(self, hosts: int, timeout: float, base_port: int = 17000, networks: int = 1,
           mode: str = "statefile", pool: Path | None = None, ha_off: bool = False,
           unsafe_watchdog_delay: float | None = None, guest_lock: bool = True,
           slots: int = 0, sr: str = "file") -> None:
        self._check_sr(sr)
        self.provision(hosts, timeout, pool, ha_off, slots)
        try:
            if sr == "iscsi":
                from hacluster.lab import iscsi

                iscsi.serve(self.root, hosts, self.load(), self.save)
            data = self.load()
            data["networks"] = networks  # a backend may build one bridge per network
            self.save(data)
            self.prepare(hosts)
            self.configure(hosts, timeout, base_port, networks, mode, unsafe_watchdog_delay,
                           guest_lock)
            self._start_in_waves(range(hosts), armed=not ha_off)
            self.wait_answering(range(hosts), armed=not ha_off)
        except BaseException:
            self.down()
            raise

    def _check_sr(self, sr: str) -> None:
        """``sr`` is ``file`` (the lab's SR file), or ``iscsi`` (that file served as an
        iSCSI LUN, :mod:`hacluster.lab.iscsi`: local backend, with what it needs here)."""
        if sr not in ("file", "iscsi"):
            raise LabError(f"the SR is 'file' or 'iscsi', not {sr!r}")
        if sr == "iscsi":
            from hacluster.lab.iscsi import missing

            if self.backend != "local":
                raise LabError(f"--sr iscsi runs on the local backend, not {self.backend} "
                               "(see docs/deploy.md)")
            if missing():
                raise LabError("--sr iscsi needs " + ", ".join(missing()))

    def provision(self, hosts: int, timeout: float, pool: Path | None = None,
                  ha_off: bool = False, slots: int = 0) -> None:
        """Write the pool's shared files: VMs, pool key, SR, secret, CA and ``lab.json``
        (:mod:`hacluster.deploy.poolfiles`, as ``hacluster pool init`` does)."""
        if not 1 <= hosts <= 250:
            raise LabError(f"the {self.backend} backend runs 1 to 250 hosts, not {hosts}")
        slots = slots or max(DEFAULT_SLOTS, hosts)
        if not hosts <= slots <= max_pool_hosts():
            raise LabError(f"--slots: {hosts} (the hosts) to {max_pool_hosts()}, not {slots}")
        if self.meta.exists():
            raise LabError(f"a lab already exists in {self.root}: 'hacluster lab down' first")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            write_pool(self.root, hosts, pool)
        except PoolError as error:
            raise LabError(f"pool file: {error}") from None
        key = poolfiles.write_pool_key(self.root / poolfiles.KEY_FILE)
        generation = new_generation()
        sr = self.root / SR_FILE
        sr.unlink(missing_ok=True)  # a lab brought down leaves its SR: a new one, formatted
        create_sr_file(sr)
        spare = self.root / SPARE_SR_FILE
        spare.unlink(missing_ok=True)
        create_sr_file(spare)
        volume = probe(sr)
        require(volume, allow_buffered=True)  # one machine: its page cache is shared
        format_volume(volume, slots, key, generation,
                      PoolState.INIT if ha_off else PoolState.ACTIVE)
        poolfiles.write_pool_secret(self.root / poolfiles.SECRET_FILE)
        private = poolfiles.create_ca(self.ca_key_dir, "lab")
        (self.root / "tls").mkdir(exist_ok=True)
        (self.root / ALERT_DIR).mkdir(exist_ok=True)  # the alert scripts any host may run
        poolfiles.publish(private.cert, self.ca.cert)
        self.save({"hosts": hosts, "timeout": timeout, "pids": {}, "generation": generation,
                   "backend": self.backend, "slots": slots, "members": list(range(hosts))})

    def configure(self, hosts: int, timeout: float, base_port: int, networks: int = 1,
                  mode: str = "statefile", unsafe_watchdog_delay: float | None = None,
                  guest_lock: bool = True) -> None:
        """Write every host's certificate and ``node.toml``, and the pool's ``hactl.toml``
        (:mod:`hacluster.deploy.poolfiles`); the host directories share the lab's pool
        file, CA certificate, secret and VM SR.

        ``unsafe_watchdog_delay`` (tests only) plants a watchdog later than the
        fence window assumes, so that chaos checkers can be shown to catch split brain;
        ``guest_lock=False`` stops the guests refusing a disk in use (chaos runs).
        """
        addresses = [[self.address(i, base_port, n) for n in range(networks)]
                     for i in range(hosts)]
        mgmt_port = base_port + MGMT_PORT_OFFSET
        poolfiles.write_hactl(self.root / poolfiles.HACTL_FILE, addresses, mgmt_port,
                              "tls/ca.pem", poolfiles.SECRET_FILE)
        key = read_key(self.root / poolfiles.KEY_FILE)
        data = self.load()
        data["settings"] = {"base_port": base_port, "networks": networks, "mode": mode,
                            "unsafe_watchdog_delay": unsafe_watchdog_delay,
                            "guest_lock": guest_lock}
        self.save(data)
        for index in range(hosts):
            poolfiles.write_host(self.host_dir(index), index, addresses,
                                 self.node_settings(index), key, self.ca)

    def node_settings(self, index: int) -> NodeSettings:
        """What host ``index``'s ``node.toml`` says besides the hosts (as ``configure`` chose)."""
        data = self.load()
        chosen, base_port = data["settings"], data["settings"]["base_port"]
        return NodeSettings(
            sr=self.sr_path(index), timeout=data["timeout"], mode=chosen["mode"],
            agent_port=base_port + AGENT_PORT_OFFSET, mgmt_port=base_port + MGMT_PORT_OFFSET,
            pool=f"../{poolfiles.POOL_FILE}", ca="../tls/ca.pem",
            secret_file=f"../{poolfiles.SECRET_FILE}", vm_dir=f"../{VM_SR}",
            guest_lock=chosen["guest_lock"],
            unsafe_watchdog_delay=chosen["unsafe_watchdog_delay"],
            slots=data.get("slots", 0), http_port=base_port + HTTP_PORT_OFFSET,
            http_address=self.http_address(index, base_port), alert_dir=f"../{ALERT_DIR}",
            heartbeat_srs={} if data.get("iscsi") else {SPARE_SR: f"../{SPARE_SR_FILE}"})

    def http_address(self, index: int, base_port: int) -> str | None:
        """Where host ``index`` serves HTTP: its own address if that is loopback (the
        local backend), else None (loopback inside its namespace or container)."""
        address = self.address(index, base_port)
        return address.host if ipaddress.ip_address(address.host).is_loopback else None

    def http_url(self, index: int) -> str:
        """Host ``index``'s status page, as reached from where it listens."""
        base_port = self.load()["settings"]["base_port"]
        host = self.http_address(index, base_port) or "127.0.0.1"
        return f"http://{host}:{base_port + HTTP_PORT_OFFSET}/"

    def start(self, index: int, armed: bool) -> int:
        data = self.load()
        self._check(index, data)
        directory = self.host_dir(index)
        with (directory / "node.out").open("ab") as out:
            process = subprocess.Popen(
                self.wrap(index, [sys.executable, "-m", "hacluster", "node", "--config",
                                  str(directory / "node.toml"), *(["--armed"] if armed else [])]),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        data["pids"][str(index)] = process.pid
        self.save(data)
        return process.pid

    def wait_answering(self, indices: Iterable[int], armed: bool = False,
                       limit: float = ANSWER_WAIT) -> None:
        """Return once every host of ``indices`` answers on its status socket and its
        management API (and, if ``armed``, runs HA: armed or joining, not HA off);
        :class:`LabError` at once, with the end of its ``node.out``, for a host whose
        daemon exited (a port taken, a bad file)."""
        waiting = set(indices)
        port = self.load()["settings"]["base_port"] + MGMT_PORT_OFFSET

        def answered() -> bool:
            for index in sorted(waiting):
                if not self.running(index):
                    out = self.host_dir(index) / "node.out"
                    tail = out.read_text(errors="replace").strip().splitlines()[-3:] \
                        if out.exists() else []
                    raise LabError(f"host {index} could not start: "
                                   + (" / ".join(tail) or "it exited without a word")
                                   + f" (all of it: {out})")
                if (self.host_dir(index) / "status.sock").exists() and _accepts(
                        self.ip(index), port) and (not armed or self._runs_ha(index)):
                    waiting.discard(index)
            return not waiting

        if wait_until(answered, limit, poll=0.1) is None:
            raise LabError(f"host(s) {sorted(waiting)} did not answer within {limit:g} s "
                           "(see their node.out)")

    def _runs_ha(self, index: int) -> bool:
        try:
            return query_status(self.host_dir(index) / "status.sock").get("phase") != "HA_OFF"
        except OSError:
            return False

    def _start_in_waves(self, indices: Iterable[int], armed: bool) -> None:
        """Start the hosts, at most :data:`STARTING_AT_ONCE` of them still starting
        (running, its status socket not there yet) at any moment: a machine that
        starts more daemons than it has cores at once starts them all late."""
        starting: list[int] = []

        def room() -> bool:
            starting[:] = [i for i in starting if self.running(i) and
                           not (self.host_dir(i) / "status.sock").exists()]
            return len(starting) < STARTING_AT_ONCE

        for index in indices:
            wait_until(room, START_WAIT)
            self.start(index, armed)
            starting.append(index)

    def restart(self, index: int) -> int:
        if self.running(index):
            raise LabError(f"host {index} is running: kill it first")
        return self.start(index, armed=False)

    def restart_all(self) -> list[int]:
        """Start every stopped host, joining (after :meth:`kill_all`: a cold start)."""
        stopped = [i for i in members(self.load()) if not self.running(i)]
        if not stopped:
            raise LabError("every host is running: kill one first (or kill all)")
        self._start_in_waves(stopped, armed=False)
        return stopped

    def down(self) -> None:
        data = self.load()
        for pid in data["pids"].values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for index in range(data["hosts"]):
            with contextlib.suppress(FileNotFoundError):
                (self.host_dir(index) / "status.sock").unlink()
        self.teardown(data)
        if data.get("iscsi"):
            from hacluster.lab import iscsi

            iscsi.stop(self.root, data)
        shutil.rmtree(self.ca_key_dir, ignore_errors=True)  # the lab's own CA: a new
        self.meta.unlink()  # lab in this directory makes a new one

    # ------------------------------------------------------------ chaos
    def _check(self, index: int, data: dict[str, Any]) -> None:
        if not 0 <= index < data["hosts"]:
            raise LabError(f"no host {index}: this lab has hosts 0..{data['hosts'] - 1}")

    def pid(self, index: int) -> int:
        data = self.load()
        self._check(index, data)
        pid = data["pids"].get(str(index))
        if pid is None:
            raise LabError(f"host {index} was never started")
        return int(pid)

    def running(self, index: int) -> bool:
        try:
            os.kill(self.pid(index), 0)
        except (ProcessLookupError, LabError):
            return False
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(self.pid(index), os.WNOHANG)
            if done:
                return False
        return True

    def kill(self, index: int) -> None:
        """SIGKILL the host's daemon and everything in its process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid(index), signal.SIGKILL)

    def kill_all(self) -> list[int]:
        """Kill every host at once, as a power cut does; returns the hosts that ran."""
        running = [i for i in members(self.load()) if self.running(i)]
        for index in running:
            self.kill(index)
        if wait_until(lambda: not any(self.running(i) for i in running), KILL_WAIT,
                      poll=0.05) is None:  # so that a restart_all right after starts them all
            raise LabError(f"hosts {[i for i in running if self.running(i)]} survived SIGKILL "
                           f"for {KILL_WAIT:.0f} s")
        return running

    def pause(self, index: int, seconds: float) -> None:
        self._signal_pause(self.pid(index), seconds)

    def _signal_pause(self, pid: int, seconds: float) -> None:
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def network_fault(self, verb: str) -> None:
        raise LabError(f"'{verb}' needs network namespaces: use the netns backend (as root)")

    # ------------------------------------------------------------ observing
    def status(self) -> list[dict[str, Any]]:
        data = self.load()
        rows = []
        for index in range(data["hosts"]):
            try:  # a host waiting to join has no index yet: the lab's is its own
                rows.append({"host": index} | query_status(self.host_dir(index) / "status.sock"))
            except OSError:
                rows.append({"host": index, "phase": "DOWN"})
        return rows

    def events(self) -> Iterator[dict[str, Any]]:
        """Every host's event log, merged in time order."""
        self.load()
        yield from read_events(self.root)


class BridgedLab(LocalLab):
    """A backend whose hosts each have their own IP on the lab's bridge (netns, docker):
    one heartbeat network, every host on the same port, and a lab id (which names
    the bridge, the hosts and the /24) chosen at ``up`` and kept in ``lab.json``."""

    networks = 1

    @property
    def lab_id(self) -> int:
        return int(self.load().get("lab_id", 0))

    def port(self, index: int, base_port: int, network: int) -> int:
        return base_port


def _accepts(host: str, port: int) -> bool:
    """Whether ``host:port`` takes a TCP connection now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def read_events(root: Path) -> list[dict[str, Any]]:
    """The event logs of every host directory under ``root``, merged in time order
    (a watchdog's last words, written by another process, get their host here)."""
    records = []
    for path in sorted(root.glob("host*/events.jsonl")):
        if not path.parent.name[4:].isdigit():
            continue
        index = int(path.parent.name[4:])
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append({"host": index} | json.loads(line))
    return sorted(records, key=lambda r: float(r["time"]))
