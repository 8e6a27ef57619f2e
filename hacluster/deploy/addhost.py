"""``hacluster pool add-host``: the files of one more host, waiting to join.

Rules:

* It runs where ``hacluster pool init`` wrote the pool (``--pool DIR``: the
  CA's key is in ``DIR/ca``) and writes ``DIR/hosts/<name>/``, a directory
  like every other host's: the pool key, a certificate from the pool CA for
  the new host's addresses, the CA certificate, the secret, the pool file and
  a ``node.toml`` that names the host's own addresses and memory instead of an
  index (:class:`~hacluster.node.config.Candidate`). Every other setting
  (SR path, T, mode, ports) is copied from an existing host's ``node.toml``.
* The host is not a member yet: started, it waits for ``hactl -s HOST:PORT
  pool-join master-address=MASTER`` (:mod:`hacluster.node.candidate`). The
  master gives it its index; this command writes nothing to the SR or the
  pool database.
* Refused, with nothing written: a directory that is not a pool's, a name
  that is taken (a host directory of that name, or a host of the pool file),
  an address another host directory or the pool file gives a host, bad memory. The directory is
  written beside its final place and renamed into it; the ``node.toml`` is
  read back with the node's own loader first.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacluster.deploy import poolfiles
from hacluster.deploy.hostlist import NewHost, parse_hosts
from hacluster.deploy.init import CA_CERT, CA_DIR, HOSTS_DIR
from hacluster.deploy.poolfiles import NodeSettings
from hacluster.mgmt.tls import CertFiles
from hacluster.model.address import ConfigError
from hacluster.model.tomlfile import read_toml
from hacluster.node.config import MAX_MEMORY, Candidate, load, load_node
from hacluster.node.keyfiles import read_key

DIRECTORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class AddHostRequest:
    pool: Path  # the directory pool init wrote
    address: str  # as --hosts writes one host: ADDR[:PORT][/ADDR2[:PORT]]
    name: str = ""  # default: the name it was given by, else host<N>
    memory: int = 0  # MiB for planning (0: the pool file's first host's)


@dataclass(frozen=True)
class AddedHost:
    directory: Path
    host: NewHost
    uuid: str
    memory: int
    mgmt_port: int


def add_host(request: AddHostRequest) -> AddedHost:
    """Write the new host's directory, or nothing (see the rules)."""
    root = request.pool
    ca = CertFiles(root / CA_DIR / "ca.pem", root / CA_DIR / "ca.key")
    hosts_dir = root / HOSTS_DIR
    existing = sorted(p for p in hosts_dir.glob(f"*/{poolfiles.NODE_FILE}")) \
        if hosts_dir.is_dir() else []
    if not ca.cert.is_file() or not ca.key.is_file() or not existing:
        raise ConfigError(f"--pool {root}: not a directory written by 'hacluster pool init' "
                          f"(it needs {CA_DIR}/ca.pem, {CA_DIR}/ca.key and {HOSTS_DIR}/*/"
                          f"{poolfiles.NODE_FILE})")
    model = existing[0]
    reference = load(model)  # a member's configuration: every value checked
    table = read_toml(model, ConfigError)
    port = reference.address.port
    [host] = _one_host(request.address, port)
    pool = reference.pool
    assert pool is not None and reference.mgmt is not None  # pool init writes both
    given_by_address = host.name == "host0"  # parse_hosts names such a host by its index
    name = request.name or (f"host{len(existing)}" if given_by_address else host.name)
    if not DIRECTORY_NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: letters, digits, '.', '_' and '-' (it names the "
                          "host's directory)")
    taken = {p.parent.name for p in existing} | {h.name for h in pool.pool.hosts}
    if name in taken:
        raise ConfigError(f"--name {name!r} is taken (a host directory or a host of the pool "
                          "file): choose another")
    mine = {a.host for a in host.addresses}
    clash = [name for name, ips in _addresses_in_use(existing).items() if ips & mine]
    clash += [h.name for h in pool.pool.hosts if h.address in mine]
    if clash:
        raise ConfigError(f"--address {request.address}: host {clash[0]} of the pool has it")
    memory = request.memory or pool.pool.hosts[0].memory_total
    if not 1 <= memory <= MAX_MEMORY:
        raise ConfigError(f"--memory: MiB, 1 to {MAX_MEMORY}, got {memory}")
    final = hosts_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.add-", dir=hosts_dir))
    host_uuid = str(uuid.uuid4())
    try:
        _write(staging, model.parent, table, host, ca, host_uuid, name, memory)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return AddedHost(final, host, host_uuid, memory, reference.mgmt.port)


def _addresses_in_use(configs: list[Path]) -> dict[str, set[str]]:
    """The IPs each host directory's ``node.toml`` gives its own host."""
    used = {}
    for path in configs:
        loaded = load_node(path)
        config = loaded.config if isinstance(loaded, Candidate) else loaded
        used[config.name or path.parent.name] = {a.host for a in config.addresses}
    return used


def _one_host(text: str, port: int) -> list[NewHost]:
    hosts = parse_hosts(text, port)
    if len(hosts) != 1:
        raise ConfigError(f"--address: one host (ADDR[:PORT], A1/A2 for two networks), "
                          f"got {len(hosts)}")
    return hosts


def _write(directory: Path, model: Path, table: dict[str, Any], host: NewHost, ca: CertFiles,
           host_uuid: str, name: str, memory: int) -> None:
    settings = NodeSettings(
        sr=table["sr"], timeout=table["timeout"], mode=table["mode"],
        agent_port=table["agent_port"], mgmt_port=table["mgmt_port"], pool=table["pool"],
        ca=table["ca"], secret_file=table["secret_file"], vm_dir=table["vm_dir"],
        guest_lock=table.get("guest_lock", True),
        unsafe_watchdog_delay=table.get("unsafe_watchdog_delay"),
        heartbeat_srs=table.get("heartbeat_srs", {}))
    key = read_key(model / table["key_file"])
    config = poolfiles.write_candidate(directory, host.addresses, settings, key, ca,
                                       host_uuid, name, memory)
    for shared, mode in ((table["ca"], poolfiles.PUBLIC), (table["pool"], poolfiles.PUBLIC),
                         (table["secret_file"], 0o600)):
        poolfiles.publish(model / shared, directory / shared, mode)
    if not isinstance(load_node(config), Candidate):  # what the host will read
        raise ConfigError(f"{config}: not a host waiting to join (a bug: please report it)")


def guide(added: AddedHost) -> str:
    """What to copy where, and what to run next."""
    first = added.host.addresses[0]
    endpoint = f"{first.host}:{added.mgmt_port}"
    return "\n".join([
        f"host {added.directory.name} ({', '.join(map(str, added.host.addresses))}, uuid "
        f"{added.uuid}, {added.memory} MiB) written to {added.directory}/: waiting to join",
        "",
        f"Copy {added.directory.name}/ to /etc/hacluster/ on the new host, then on it:",
        "  hacluster node --check --config /etc/hacluster/node.toml",
        "  hacluster node --config /etc/hacluster/node.toml",
        "and, from the operator's machine, with the pool's master's management address:",
        f"  hactl --config operator/hactl.toml -s {endpoint} pool-join "
        "master-address=MASTER",
        f"(it uses the CA certificate {CA_CERT} and the secret the host holds to reach the "
        "master; the master gives it its HA index).",
    ]) + "\n"
