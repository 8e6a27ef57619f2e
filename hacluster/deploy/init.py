"""``hacluster pool init``: a new pool's files, one directory per destination, and its SR.

Rules:

* The output directory (``--out``, absent or empty) receives, with mode 0700:

  - ``ca/``: the pool CA, ``ca.pem`` and ``ca.key``. It goes to no host: keep
    it offline; it is needed only to issue certificates (new hosts, clients).
  - ``hosts/<name>/``, one per host: ``node.toml``, ``pool.key``,
    ``host.pem``, ``host.key``, ``ca.pem``, ``pool.secret`` and ``pool.toml``.
    Copy it whole to the host (``/etc/hacluster``); every path in
    ``node.toml`` is relative to it but the SR's, which is the volume as the
    hosts see it. The node keeps its state there too.
  - ``operator/``: ``hactl.toml``, ``ca.pem`` and ``pool.secret``, for the
    operator's machine.
  - ``README.txt``: what goes where (:func:`guide`, also printed).

* Everything is checked before anything is written: the hosts
  (:mod:`~hacluster.deploy.hostlist`), the name, ports, timeout, mode, a
  given pool file (it must list as many hosts), the output directory, and the
  SR (:func:`~hacluster.storage.volume.require`: reachable, big enough,
  ``O_DIRECT``, empty unless forced). Files are written into a temporary
  directory beside the output, each host's ``node.toml`` is read back by the
  node's own loader, the directory is renamed into place and only then is
  the SR formatted (state INIT: HA off until ``hactl pool-ha-enable``). Any
  failure removes what was written: no partial directory, no SR written.
* Without a pool file, the pool file lists the hosts (a random uuid each, the
  given memory, their first address) and no VM, SR or network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from hacluster.core.node import Mode
from hacluster.core.pool import Host, Pool, PoolError
from hacluster.core.timing import Timing, TimingError
from hacluster.deploy import poolfiles
from hacluster.deploy.hostlist import NewHost
from hacluster.deploy.poolfiles import NodeSettings
from hacluster.model import poolfile
from hacluster.model.address import ConfigError
from hacluster.model.poolfile import MAX_NAME, PoolFile
from hacluster.node.config import MAX_TIMEOUT, load
from hacluster.storage.sr import PoolState, max_pool_hosts
from hacluster.storage.volume import Volume, format_volume, new_generation, probe, require
from hacluster.wire.codec import new_pool_key

DEFAULT_HEARTBEAT_PORT = 7000  # UDP, every heartbeat network
DEFAULT_AGENT_PORT = 7001  # TCP, host to host RPC
DEFAULT_MGMT_PORT = 7002  # TCP, the management API (hactl)
DEFAULT_TIMEOUT = 30.0
DEFAULT_HOST_MEMORY = 4096  # MiB, until the operator writes each host's own
CA_DIR = "ca"
HOSTS_DIR = "hosts"
DEFAULT_SLOTS = 16  # the index space a pool gets unless --slots says: room for joins
OPERATOR_DIR = "operator"
README = "README.txt"
CA_CERT = "ca.pem"


@dataclass(frozen=True)
class InitRequest:
    name: str
    hosts: tuple[NewHost, ...]
    sr: Path  # the volume, as this machine reaches it
    out: Path
    timeout: float = DEFAULT_TIMEOUT
    mode: str = Mode.STATEFILE.value
    agent_port: int = DEFAULT_AGENT_PORT
    mgmt_port: int = DEFAULT_MGMT_PORT
    host_sr: str | None = None  # the volume as the hosts reach it (default: ``sr``)
    vm_dir: str = "vms"  # the guests' shared disk directory, as the hosts reach it
    pool_file: PoolFile | None = None  # the VMs to protect (default: none)
    host_memory: int = DEFAULT_HOST_MEMORY
    slots: int = 0  # the index space: hosts can join up to it (0: DEFAULT_SLOTS or more)
    force: bool = False  # format an SR that holds data
    allow_buffered: bool = False  # accept an SR that refuses O_DIRECT

    @property
    def capacity(self) -> int:
        return self.slots or max(DEFAULT_SLOTS, len(self.hosts))

    @property
    def sr_for_hosts(self) -> str:
        return self.host_sr if self.host_sr is not None else os.path.abspath(self.sr)


@dataclass(frozen=True)
class Created:
    request: InitRequest
    generation: int
    volume: Volume
    host_dirs: list[Path] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.request.out


def check_request(request: InitRequest) -> Volume:
    """Every refusal of :func:`init_pool`, before anything is written; the SR as probed."""
    name = request.name
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise ConfigError(f"--name: 1 to {MAX_NAME} printable characters, got {name!r}")
    if request.mode not in {m.value for m in Mode}:
        raise ConfigError(f"--mode: statefile or clustered, got {request.mode!r}")
    try:
        if not request.timeout <= MAX_TIMEOUT:
            raise ConfigError(f"--timeout: at most {MAX_TIMEOUT:g} s, got {request.timeout}")
        Timing.derive(request.timeout)
    except TimingError as error:
        raise ConfigError(f"--timeout: {error}") from None
    ports = {"--agent-port": request.agent_port, "--mgmt-port": request.mgmt_port}
    for option, port in ports.items():
        if not 1 <= port <= 65535:
            raise ConfigError(f"{option}: a port is 1..65535, got {port}")
    if request.agent_port == request.mgmt_port:
        raise ConfigError(f"--agent-port and --mgmt-port are both {request.agent_port}: "
                          "each needs its own TCP port")
    if not len(request.hosts) <= request.capacity <= max_pool_hosts():
        raise ConfigError(f"--slots: {len(request.hosts)} (the hosts given) to "
                          f"{max_pool_hosts()}, got {request.capacity}")
    if request.host_memory < 0:
        raise ConfigError(f"--host-memory: MiB, 0 or more, got {request.host_memory}")
    for option, text in (("--host-sr", request.host_sr), ("--vm-dir", request.vm_dir)):
        if text is not None and (not text or "\0" in text):
            raise ConfigError(f"{option}: a path (not empty, no NUL), got {text!r}")
    if request.pool_file is not None and \
            len(request.pool_file.pool.hosts) != len(request.hosts):
        raise ConfigError(f"--pool lists {len(request.pool_file.pool.hosts)} hosts, --hosts "
                          f"{len(request.hosts)}: the pool file lists the same hosts, in order")
    out = request.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty directory: choose a new "
                          "one (pool init never overwrites a pool's files)")
    if not out.absolute().parent.is_dir():
        raise ConfigError(f"--out {out}: {out.absolute().parent} is not a directory")
    volume = probe(request.sr)
    require(volume, request.force, request.allow_buffered)
    return volume


def pool_file_for(request: InitRequest) -> PoolFile:
    """The given pool file, named; else the hosts alone."""
    if request.pool_file is not None:
        return PoolFile(request.pool_file.pool, request.pool_file.commands, request.name)
    hosts = tuple(Host(str(uuid.uuid4()), h.name, request.host_memory,
                       address=h.addresses[0].host) for h in request.hosts)
    try:
        return PoolFile(Pool(hosts), name=request.name)
    except PoolError as error:  # not expected: the hosts were checked
        raise ConfigError(f"the pool file: {error}") from None


def init_pool(request: InitRequest) -> Created:
    """Write the pool's files and format its SR, or change nothing (see the rules)."""
    volume = check_request(request)
    pool = pool_file_for(request)
    out = request.out
    existed = out.exists()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.init-", dir=out.absolute().parent))
    key = new_pool_key()
    try:
        host_dirs = _write(staging, request, pool, key)
        staging.rename(out)  # over an empty directory too
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        generation = new_generation()
        format_volume(volume, request.capacity, key, generation, PoolState.INIT)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            out.mkdir()
        raise
    created = Created(request, generation, volume, [out / d.relative_to(staging)
                                                    for d in host_dirs])
    (out / README).write_text(guide(created))
    return created


def _write(root: Path, request: InitRequest, pool: PoolFile, key: bytes) -> list[Path]:
    """Every file of the pool under ``root``; the host directories, in index order."""
    ca = poolfiles.create_ca(root / CA_DIR, request.name)
    operator = root / OPERATOR_DIR
    operator.mkdir()
    poolfiles.write_pool_secret(operator / poolfiles.SECRET_FILE)
    poolfiles.publish(ca.cert, operator / CA_CERT)
    hosts = [h.addresses for h in request.hosts]
    poolfiles.write_hactl(operator / poolfiles.HACTL_FILE, hosts, request.mgmt_port,
                          CA_CERT, poolfiles.SECRET_FILE)
    settings = NodeSettings(sr=request.sr_for_hosts, timeout=request.timeout,
                            mode=request.mode, agent_port=request.agent_port,
                            mgmt_port=request.mgmt_port, pool=poolfiles.POOL_FILE,
                            ca=CA_CERT, secret_file=poolfiles.SECRET_FILE,
                            vm_dir=request.vm_dir, slots=request.capacity)
    (root / HOSTS_DIR).mkdir()
    pool_text = poolfile.dump(pool).encode()
    directories = []
    for index, host in enumerate(request.hosts):
        directory = root / HOSTS_DIR / host.name
        config = poolfiles.write_host(directory, index, hosts, settings, key, ca)
        poolfiles.publish(ca.cert, directory / CA_CERT)
        poolfiles.publish(operator / poolfiles.SECRET_FILE, directory / poolfiles.SECRET_FILE,
                          0o600)
        (directory / poolfiles.POOL_FILE).write_bytes(pool_text)
        load(config)  # what a host will read: a mistake here is ours, caught before any SR
        directories.append(directory)
    return directories


def guide(created: Created) -> str:
    """What to copy where, and what to run next."""
    request = created.request
    out = request.out
    lines = [
        f"pool {request.name!r}: {len(request.hosts)} hosts, T={request.timeout:g} s, "
        f"{request.mode} mode, written to {out}/",
        f"heartbeat SR {request.sr} formatted ({created.volume.kind}, "
        f"{created.volume.size // (1024 * 1024)} MiB, {created.volume.io}), "
        f"generation {created.generation:x}, HA off",
        "",
        "Copy:",
    ]
    for host, directory in zip(request.hosts, created.host_dirs, strict=True):
        addresses = ", ".join(str(a) for a in host.addresses)
        lines.append(f"  {directory.relative_to(out)}/  ->  /etc/hacluster/ on {host.name} "
                     f"({addresses})")
    lines += [
        f"  to the shared volume: nothing more (the hosts open it as {request.sr_for_hosts})",
        f"  {OPERATOR_DIR}/  ->  the operator's machine (hactl.toml, {CA_CERT}, "
        f"{poolfiles.SECRET_FILE})",
        f"  {CA_DIR}/  ->  nowhere: keep the CA key offline (it issues certificates for new "
        "hosts and clients)",
        "",
        "Then, on each host:",
        "  hacluster node --check --config /etc/hacluster/node.toml",
        "  hacluster node --config /etc/hacluster/node.toml",
        "and, from the operator's machine, once every host runs:",
        f"  hactl --config {OPERATOR_DIR}/hactl.toml pool-ha-enable "
        f"ha-config:timeout={request.timeout:g}",
        "",
        "Open the ports between the hosts: "
        + ", ".join(f"{port}/udp" for port in sorted({a.port for h in request.hosts
                                                      for a in h.addresses}))
        + f" (heartbeats), {request.agent_port}/tcp (agents), {request.mgmt_port}/tcp "
        "(management API, also from the operator's machine).",
    ]
    return "\n".join(lines) + "\n"
