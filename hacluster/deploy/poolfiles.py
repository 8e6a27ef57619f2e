"""Writing a pool's files: the one code path of ``hacluster pool init`` and of every lab.

Rules:

* The pool key (32 random bytes, hex) and the pool secret (32 random bytes,
  hex) are files of mode 0600, as is every private key, created so and never
  wider for a moment (:func:`~hacluster.storage.files.write_atomically`,
  :func:`~hacluster.mgmt.tls.create_pool_ca`).
* The pool CA is made in a directory of its own (mode 0700), never one whose
  files go to hosts: only its certificate is copied out (:func:`publish`).
* A host's own files are its copy of the pool key, its certificate for its
  heartbeat addresses (``host.pem``, ``host.key``) and ``node.toml``: a
  member's, or a candidate's (a host waiting to join names its addresses). One
  function, :func:`node_toml`, writes every ``node.toml`` from
  :class:`NodeSettings`; where the pool's shared files (pool file, CA
  certificate, secret, SR) are is the caller's layout, as seen from the host's
  directory.
* ``hactl.toml`` lists every host's management endpoint (its first heartbeat
  address, on the management port), the CA certificate and the secret.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hacluster.mgmt.tls import CertFiles, create_pool_ca, issue_certificate
from hacluster.model.address import Address
from hacluster.model.tomlfile import toml_fields
from hacluster.storage.files import write_atomically
from hacluster.wire.codec import new_pool_key

KEY_FILE = "pool.key"
SECRET_FILE = "pool.secret"
POOL_FILE = "pool.toml"
NODE_FILE = "node.toml"
HACTL_FILE = "hactl.toml"
HOST_CERT = "host"  # host.pem and host.key
PUBLIC = 0o644


@dataclass(frozen=True)
class NodeSettings:
    """What every host's ``node.toml`` says besides its index and the host list.

    Paths are as the host sees them: relative to its directory, or absolute."""

    sr: str
    timeout: float
    mode: str
    agent_port: int
    mgmt_port: int
    pool: str = POOL_FILE
    ca: str = "ca.pem"
    secret_file: str = SECRET_FILE
    vm_dir: str = "vms"
    guest_lock: bool = True  # False: guests start on a disk in use (chaos runs)
    unsafe_watchdog_delay: float | None = None  # tests only: a late watchdog
    slots: int = 0  # the pool's index space (0: as many as the hosts listed)
    http_port: int | None = None  # health, status, metrics and the status page
    http_address: str | None = None  # where they listen (None: 127.0.0.1)
    alert_dir: str | None = None  # the scripts other-config:alert-script may name
    heartbeat_srs: Mapping[str, str] = field(default_factory=dict)  # other SRs: uuid -> path


Hosts = Sequence[Sequence[Address]]  # per host, in index order: one address per network


def write_pool_key(path: Path) -> bytes:
    """A new pool key in ``path`` (hex, 0600); the key."""
    key = new_pool_key()
    write_key(path, key)
    return key


def write_key(path: Path, key: bytes) -> None:
    """``key`` into ``path`` as hex, mode 0600 (a host's copy of the pool key)."""
    write_atomically(path, (key.hex() + "\n").encode(), 0o600)


def write_pool_secret(path: Path) -> None:
    """A new pool secret in ``path`` (hex, 0600)."""
    write_atomically(path, (secrets.token_hex(32) + "\n").encode(), 0o600)


def create_ca(directory: Path, pool_name: str) -> CertFiles:
    """The pool CA in ``directory``, made mode 0700 first: its key never sits anywhere wider."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # exactly, whatever the umask or an earlier mode
    return create_pool_ca(directory, pool_name)


def publish(source: Path, target: Path, mode: int = PUBLIC) -> None:
    """Copy ``source`` (a certificate, a pool file) to ``target`` atomically, ``mode``."""
    write_atomically(target, source.read_bytes(), mode)


def node_toml(index: int, hosts: Hosts, settings: NodeSettings, uuid: str = "",
              name: str = "") -> str:
    """Host ``index``'s ``node.toml``; :func:`hacluster.node.config.load` reads it.

    A free index is an empty row; ``uuid`` and ``name`` name a host the pool file
    does not list (one that joined)."""
    head = toml_fields(index=index, hosts=[[str(address) for address in row] for row in hosts])
    if settings.slots:
        head += toml_fields(slots=settings.slots)
    return _node_file(head, settings, uuid, name)


def candidate_toml(addresses: Sequence[Address], settings: NodeSettings, uuid: str, name: str,
                   memory: int) -> str:
    """The ``node.toml`` of a host waiting to join (:class:`hacluster.node.config.Candidate`):
    its own addresses and memory instead of an index and the hosts."""
    head = toml_fields(address=[str(address) for address in addresses], memory=memory)
    return _node_file(head, settings, uuid, name)


def _node_file(head: list[str], settings: NodeSettings, uuid: str, name: str) -> str:
    fields = head + toml_fields(
        sr=settings.sr,
        key_file=KEY_FILE,
        timeout=settings.timeout,
        mode=settings.mode,
        status_socket="status.sock",
        log="events.jsonl",
        pool=settings.pool,
        agent_port=settings.agent_port,
        vm_dir=settings.vm_dir,
        mgmt_port=settings.mgmt_port,
        tls_cert=f"{HOST_CERT}.pem",
        tls_key=f"{HOST_CERT}.key",
        ca=settings.ca,
        secret_file=settings.secret_file,
    )
    if uuid:
        fields += toml_fields(uuid=uuid, name=name or uuid)
    if settings.http_port is not None:
        fields += toml_fields(http_port=settings.http_port)
        if settings.http_address is not None:
            fields += toml_fields(http_address=settings.http_address)
    if settings.alert_dir is not None:
        fields += toml_fields(alert_dir=settings.alert_dir)
    if settings.unsafe_watchdog_delay is not None:
        fields += toml_fields(unsafe_watchdog_delay=settings.unsafe_watchdog_delay)
    if not settings.guest_lock:
        fields += toml_fields(guest_lock=False)
    if settings.heartbeat_srs:
        fields += toml_fields(heartbeat_srs=dict(settings.heartbeat_srs))
    return "\n".join(fields) + "\n"


def write_host(directory: Path, index: int, hosts: Hosts, settings: NodeSettings,
               key: bytes, ca: CertFiles, uuid: str = "", name: str = "") -> Path:
    """Host ``index``'s own files in ``directory``: pool key, certificate, ``node.toml``."""
    return _write_own(directory, hosts[index], key, ca,
                      node_toml(index, hosts, settings, uuid, name))


def write_candidate(directory: Path, addresses: Sequence[Address], settings: NodeSettings,
                    key: bytes, ca: CertFiles, uuid: str, name: str, memory: int) -> Path:
    """A host's own files while it waits to join: pool key, certificate, ``node.toml``."""
    return _write_own(directory, addresses, key, ca,
                      candidate_toml(addresses, settings, uuid, name, memory))


def _write_own(directory: Path, addresses: Sequence[Address], key: bytes, ca: CertFiles,
               node_file: str) -> Path:
    directory.mkdir(exist_ok=True)
    write_key(directory / KEY_FILE, key)
    issue_certificate(ca, directory, HOST_CERT, [address.host for address in addresses])
    path = directory / NODE_FILE
    write_atomically(path, node_file.encode(), PUBLIC)
    return path


def write_hactl(path: Path, hosts: Hosts, mgmt_port: int, ca: str,
                secret_file: str) -> None:
    """``hactl.toml``: every host's management endpoint on each of its networks (a
    host's first network first, then its others, then the next host's: any host
    will do, and hactl reaches the first on another network if one is cut; an
    address several hosts share is left out), the CA certificate, the secret."""
    shared = Counter(host for row in hosts for host in {a.host for a in row})
    servers = [str(Address(a.host, mgmt_port)) for row in hosts for n, a in enumerate(row)
               if n == 0 or shared[a.host] == 1]
    text = "\n".join(toml_fields(servers=servers, ca=ca, secret_file=secret_file)) + "\n"
    write_atomically(path, text.encode(), PUBLIC)
