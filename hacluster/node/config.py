"""Node configuration (TOML), validated with errors that say what to fix.

Rules: every field is checked before anything starts; an error names the file,
the field and what is expected. Addresses are ``host:port`` (IPv6 in
brackets); every host of the pool is listed in index order, this node's own
``index`` included, as one address or as a list of one address per heartbeat
network (every host on the same number of networks), or ``[]`` for an index
no host holds; ``slots`` (default: as many as ``hosts`` lists) is the pool's
index space, the SR's slot count, which joins fill; ``uuid`` and ``name``
name this host when the pool file does not list it (a host that joined); a
host waiting to join names its own ``address`` and ``memory`` (MiB) instead
of ``index`` and ``hosts`` (:class:`Candidate`: :func:`load_node` reads both
kinds, :func:`load` members only); at
start the SR's member table, if any, overrides ``hosts`` (:mod:`hacluster.node.roster`);
the pool key file holds
32 bytes (raw or hex), and beside it a second accepted key while a key
rotation is under way (:mod:`hacluster.node.keyfiles`). With a ``pool`` file
(the VMs HA protects) the node also needs ``agent_port`` (the TCP port of
every host's agent) and ``vm_dir`` (the shared directory holding the guests'
disks; ``guest_lock = false`` lets the default guests start on a disk another
live instance writes, so chaos checkers see what the HA decisions alone do),
and may serve the management API: ``mgmt_port`` with ``tls_cert``,
``tls_key``, ``ca`` (the pool CA) and ``secret_file`` (the pool secret
operators' tools present), all or none. ``watchdog_device`` (optional) names a
Linux watchdog device (``/dev/watchdog``) that fences this host on top of the
watchdog process: it must exist and not be a directory (whether it is a
watchdog is learnt when HA starts, from its answer to the timeout ioctl).
``heartbeat_srs`` (optional) maps the uuids of the other SRs this host can
use for heartbeats to their paths as it sees them (``sr`` is the path of
:data:`~hacluster.core.pooldb.DEFAULT_HEARTBEAT_SR`, the pool's first):
``pool-ha-enable heartbeat-sr-uuids=`` moves the pool onto one of them
(:mod:`hacluster.node.heartbeat_sr`). ``http_port`` (optional) serves health,
status, metrics and the status page
(:mod:`hacluster.node.web`) on ``http_address`` (default ``127.0.0.1``): plain
HTTP on a loopback address only; any other address needs the management API
(its TLS and credentials guard the page). ``alert_dir`` (optional) holds the
scripts the pool's ``other-config:alert-script`` may name
(:mod:`hacluster.mgmt.alert_hooks`).

Limits: every value is type-checked by :func:`~hacluster.model.tomlfile.checked`
(no bool for a number, no NaN, infinity or absurd size); ports are 1..65535 in
ASCII digits; ``timeout`` is at most :data:`MAX_TIMEOUT` seconds; paths are
non-empty without NUL; addresses are compared in their canonical spelling, so
one address written twice is refused; a pool has at most
:func:`~hacluster.storage.sr.max_pool_hosts` hosts (the most whose largest
report fits a heartbeat SR slot), and a key file is read only up to
:data:`MAX_KEY_FILE` bytes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacluster.core.node import Mode
from hacluster.core.pool import PoolError
from hacluster.core.pooldb import DEFAULT_HEARTBEAT_SR, MAX_SR_ID
from hacluster.core.timing import MAX_TIMEOUT, Timing, TimingError
from hacluster.model import poolfile
from hacluster.model.address import Address, ConfigError
from hacluster.model.poolfile import PoolFile
from hacluster.model.tomlfile import brief, checked, in_range, read_toml, toml_fields
from hacluster.node.keyfiles import MAX_KEY_FILE, load_ring, read_key, read_small
from hacluster.node.roster import Roster
from hacluster.storage.sr import BLOCK, max_pool_hosts
from hacluster.wire.keys import KeyRing

__all__ = ["MAX_KEY_FILE", "MAX_TIMEOUT", "MGMT_FIELDS", "Address", "Candidate", "ConfigError",
           "HttpFace", "Management", "NodeConfig", "load", "load_node", "read_key"]



@dataclass(frozen=True)
class Management:
    port: int
    cert: Path
    key: Path
    ca: Path
    secret: bytes


MGMT_FIELDS = ("mgmt_port", "tls_cert", "tls_key", "ca", "secret_file")
HTTP_FIELDS = ("http_port", "http_address")
HTTP_LOOPBACK = "127.0.0.1"  # where the HTTP face listens unless told
MAX_HEARTBEAT_SRS = 16  # SRs a host may map besides 'sr'


@dataclass(frozen=True)
class HttpFace:
    """Where the node serves HTTP (:mod:`hacluster.node.web`); plain on a loopback
    address only, TLS with the management API's certificate anywhere else."""

    port: int
    address: str = HTTP_LOOPBACK

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback


def _http(table: dict[str, Any], mgmt: Management | None, where: str) -> HttpFace | None:
    if "http_port" not in table:
        if "http_address" in table:
            raise ConfigError(f"{where}: http_address needs http_port")
        return None
    port = _port(table, "http_port", where)
    address = checked(table.get("http_address", HTTP_LOOPBACK), str,
                      f"{where}: field 'http_address'", ConfigError)
    try:
        face = HttpFace(port, str(ipaddress.ip_address(address)))
    except ValueError:
        raise ConfigError(f"{where}: http_address must be an IP address, got "
                          f"{address!r}") from None
    if not face.loopback and mgmt is None:
        raise ConfigError(f"{where}: http_address {address} is not a loopback address: "
                          "off loopback the HTTP face speaks TLS and asks for credentials, "
                          "which needs the management API configured (mgmt_port, tls_cert, "
                          "tls_key, ca, secret_file); or listen on 127.0.0.1")
    return face


def _management(table: dict[str, Any], base: Path, where: str) -> Management | None:
    given = [name for name in MGMT_FIELDS if name in table]
    if not given:
        return None
    if len(given) != len(MGMT_FIELDS):
        missing = [name for name in MGMT_FIELDS if name not in table]
        raise ConfigError(f"{where}: the management API needs {list(MGMT_FIELDS)}; "
                          f"missing {missing}")
    port = _port(table, "mgmt_port", where)
    secret_path = _path(table, "secret_file", base, where)
    secret = read_small(secret_path, f"{where}: secret_file {secret_path}").strip()
    if len(secret) < 16:
        raise ConfigError(f"{where}: secret_file {secret_path} must hold at least 16 bytes")
    paths = [_path(table, name, base, where) for name in ("tls_cert", "tls_key", "ca")]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{where}: {path} does not exist (create the pool CA and "
                              "this host's certificate first)")
    return Management(port, paths[0], paths[1], paths[2], secret)


@dataclass(frozen=True)
class NodeConfig:
    index: int
    hosts: tuple[tuple[Address, ...], ...]  # per host, one address per network
    sr: Path
    key: bytes  # the current pool key
    timing: Timing
    mode: Mode
    status_socket: Path
    log: Path | None
    pool: PoolFile | None = None  # the pool file: the VMs this pool protects
    agent_port: int = 0  # TCP port of every host's agent (with ``pool``)
    vm_dir: Path | None = None  # the shared VM SR: guests' disks
    mgmt: Management | None = None  # the management API, with ``pool``
    guest_lock: bool = True  # guests refuse a disk another live instance writes
    unsafe_watchdog_delay: float = 0.0  # tests only: the watchdog fires this much late
    key_file: Path | None = None  # where the pool key is kept (a rotation rewrites it)
    ring: KeyRing | None = None  # the keys the files held at start, if more than ``key``
    slots: int = 0  # the pool's index space (0: as many as ``hosts``)
    uuid: str = ""  # this host's uuid if the pool file does not list it (a joined host)
    name: str = ""
    watchdog_device: Path | None = None  # /dev/watchdog: fences on top of the process
    http: HttpFace | None = None  # health, status, metrics and the status page
    alert_dir: Path | None = None  # the scripts other-config:alert-script may name
    heartbeat_srs: tuple[tuple[str, Path], ...] = ()  # other heartbeat SRs: uuid, path

    def sr_path(self, uuid: str) -> Path | None:
        """Where this host opens heartbeat SR ``uuid`` (None: node.toml does not map it)."""
        if uuid in ("", DEFAULT_HEARTBEAT_SR):
            return self.sr
        return dict(self.heartbeat_srs).get(uuid)

    @property
    def sr_uuids(self) -> tuple[str, ...]:
        """Every heartbeat SR this host maps, the default first."""
        return (DEFAULT_HEARTBEAT_SR, *(uuid for uuid, _ in self.heartbeat_srs))

    @property
    def capacity(self) -> int:
        return self.slots or len(self.hosts)

    @property
    def my_uuid(self) -> str:
        if self.uuid or self.pool is None:
            return self.uuid or f"host-{self.index}"
        return self.pool.pool.hosts[self.index].uuid

    def seed_roster(self) -> Roster:
        """The members this configuration lists (the pool file names them, in order)."""
        listed = {i: h for i, h in enumerate(self.hosts) if h}
        hosts = self.pool.pool.hosts if self.pool is not None else ()
        uuids = {i: hosts[i].uuid if i < len(hosts) else f"host-{i}" for i in listed}
        names = {i: hosts[i].name if i < len(hosts) else f"host{i}" for i in listed}
        if self.uuid:
            uuids[self.index], names[self.index] = self.uuid, self.name or self.uuid
        return Roster(self.capacity, 0, listed, uuids, names)

    @property
    def keys(self) -> KeyRing:
        """The pool keys this host starts with: ``key`` and any second accepted key."""
        return self.ring if self.ring is not None else KeyRing(self.key)

    @property
    def addresses(self) -> tuple[Address, ...]:
        return self.hosts[self.index]

    @property
    def address(self) -> Address:
        return self.addresses[0]


def _need(table: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in table:
        raise ConfigError(f"{where}: missing field {name!r}")
    return checked(table[name], kind, f"{where}: field {name!r}", ConfigError)


def _port(table: dict[str, Any], name: str, where: str) -> int:
    port: int = in_range(_need(table, name, int, where), int, 1, 65535,
                         f"{where}: field {name!r}", ConfigError)
    return port


def _path(table: dict[str, Any], name: str, base: Path, where: str) -> Path:
    text: str = _need(table, name, str, where)
    if not text or "\0" in text:
        raise ConfigError(f"{where}: field {name!r} must be a file path (not empty, no NUL), "
                          f"got {brief(text)}")
    return base / text


def _host_addresses(entry: Any, where: str) -> tuple[Address, ...]:
    if entry == []:
        return ()  # an index no host holds
    if isinstance(entry, str):
        return (Address.parse(entry, where),)
    if isinstance(entry, list) and entry and all(isinstance(e, str) for e in entry):
        return tuple(Address.parse(e, f"{where}[{k}]") for k, e in enumerate(entry))
    raise ConfigError(f"{where}: expected \"host:port\" or a list of them, got {entry!r}")


def _unsafe_watchdog_delay(table: dict[str, Any], where: str) -> float:
    """Tests only: ``unsafe_watchdog_delay`` makes this host's watchdog fire that
    many seconds after the moment the pool's fence window assumes.

    A late watchdog lets survivors restart VMs while a frozen host still runs
    them: it exists so that a checker can be shown to catch split brain, and
    the daemon says so loudly when it starts.
    """
    delay: float = in_range(table.get("unsafe_watchdog_delay", 0.0), float, 0, 3600,
                            f"{where}: field 'unsafe_watchdog_delay' (seconds)", ConfigError)
    return delay


def _watchdog_device(table: dict[str, Any], base: Path, where: str) -> Path | None:
    if "watchdog_device" not in table:
        return None
    path = _path(table, "watchdog_device", base, where)
    if not path.exists():
        raise ConfigError(f"{where}: watchdog_device {path} does not exist (load a watchdog "
                          "driver: modprobe softdog, see docs/deploy.md; or remove the field "
                          "to fence with the watchdog process alone)")
    if path.is_dir():
        raise ConfigError(f"{where}: watchdog_device {path} is a directory, not a device")
    return path


MEMBER_FIELDS = ("index", "hosts", "slots")  # what a candidate learns when it joins
CANDIDATE_FIELDS = ("address", "memory")  # what it says of itself until then
KNOWN_FIELDS = frozenset({
    *MEMBER_FIELDS, *CANDIDATE_FIELDS, "sr", "key_file", "timeout", "mode", "status_socket",
    "log", "pool", "agent_port", "vm_dir", "guest_lock", "unsafe_watchdog_delay", "uuid",
    "name", "watchdog_device", "alert_dir", "heartbeat_srs", *MGMT_FIELDS, *HTTP_FIELDS})
MAX_MEMORY = 1 << 40  # MiB: a host's memory for planning


@dataclass(frozen=True)
class Candidate:
    """A host waiting to join a pool (:mod:`hacluster.node.candidate`).

    Its ``node.toml`` names its own ``address`` (one per heartbeat network) and
    ``memory`` (MiB) instead of ``index`` and ``hosts``; ``uuid``, the pool file
    and the management API are required. ``config`` is every other field,
    checked as a member's would be (the host as index 0 of a pool of one)."""

    path: Path
    config: NodeConfig
    memory: int
    table: dict[str, Any]  # the file as read: rewritten as a member's by :meth:`joined`

    @property
    def addresses(self) -> tuple[Address, ...]:
        return self.config.addresses

    def joined(self, index: int, hosts: list[list[str]], slots: int) -> str:
        """The member's ``node.toml``: this one with the index and hosts it was given."""
        kept = {k: v for k, v in self.table.items()
                if k not in (*MEMBER_FIELDS, *CANDIDATE_FIELDS)}
        return "\n".join(toml_fields(index=index, hosts=hosts, slots=slots, **kept)) + "\n"


def load(path: str | Path) -> NodeConfig:
    """A member's configuration; :class:`ConfigError` for anything else."""
    loaded = load_node(path)
    if isinstance(loaded, Candidate):
        raise ConfigError(f"{path}: this host has not joined a pool yet (it names its "
                          "'address', not an 'index'): start its daemon and run 'hactl -s "
                          "HOST:MGMT_PORT pool-join master-address=MASTER:MGMT_PORT'")
    return loaded


def load_node(path: str | Path) -> NodeConfig | Candidate:
    """A member's configuration, or a candidate's (a host waiting to join)."""
    where = str(path)
    table = read_toml(path, ConfigError)
    unknown = sorted(set(table) - KNOWN_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: "
                          f"{sorted(KNOWN_FIELDS)}")
    if "index" in table or "address" not in table:
        stray = [name for name in CANDIDATE_FIELDS if name in table]
        if stray:
            raise ConfigError(f"{where}: {stray} are for a host waiting to join; a member "
                              "names its 'index' and the 'hosts' instead")
        return _member(table, path)
    return _candidate(table, path)


def _candidate(table: dict[str, Any], path: str | Path) -> Candidate:
    where = str(path)
    if "hosts" in table:
        raise ConfigError(f"{where}: a host waiting to join names its 'address', not the "
                          "'hosts' (the master gives them when it joins)")
    for name in ("uuid", "pool", *MGMT_FIELDS):
        if name not in table:
            raise ConfigError(f"{where}: a host waiting to join needs {name!r} (its uuid, the "
                              "pool file and the management API that hactl pool-join reaches)")
    memory: int = in_range(_need(table, "memory", int, where), int, 1, MAX_MEMORY,
                           f"{where}: field 'memory' (MiB)", ConfigError)
    if not _host_addresses(table["address"], f"{where}: address"):
        raise ConfigError(f"{where}: 'address' lists no address")
    as_member = {k: v for k, v in table.items() if k not in CANDIDATE_FIELDS}
    config = _member({**as_member, "index": 0, "hosts": [table["address"]]}, path)
    return Candidate(Path(path), config, memory, table)


def _member(table: dict[str, Any], path: str | Path) -> NodeConfig:
    where = str(path)
    listed = _need(table, "hosts", list, where)
    if not listed:
        raise ConfigError(f"{where}: 'hosts' lists no host")
    if len(listed) > max_pool_hosts():
        raise ConfigError(f"{where}: 'hosts' lists {len(listed)} hosts; a pool has at most "
                          f"{max_pool_hosts()} (the most whose largest report fits a "
                          f"{BLOCK}-byte heartbeat SR slot)")
    hosts = tuple(_host_addresses(h, f"{where}: hosts[{i}]") for i, h in enumerate(listed))
    if len({len(h) for h in hosts if h}) != 1:
        raise ConfigError(f"{where}: every host needs an address on each heartbeat network")
    every = [a for h in hosts for a in h]
    if len(set(every)) != len(every):
        raise ConfigError(f"{where}: 'hosts' lists an address twice")
    index = _need(table, "index", int, where)
    if not 0 <= index < len(hosts):
        raise ConfigError(f"{where}: index {index} outside 0..{len(hosts) - 1}")
    if not hosts[index]:
        raise ConfigError(f"{where}: hosts[{index}] (this host) lists no address")
    slots = in_range(table.get("slots", len(hosts)), int, len(hosts), max_pool_hosts(),
                     f"{where}: field 'slots' (at least the hosts listed)", ConfigError)
    uuid = checked(table.get("uuid", ""), str, f"{where}: field 'uuid'", ConfigError)
    name = checked(table.get("name", ""), str, f"{where}: field 'name'", ConfigError)
    timeout = in_range(table.get("timeout", 60), float, 0, MAX_TIMEOUT,
                       f"{where}: field 'timeout' (seconds)", ConfigError)
    try:
        timing = Timing.derive(timeout)
    except TimingError as error:
        raise ConfigError(f"{where}: timeout: {error}") from None
    mode_name = checked(table.get("mode", Mode.STATEFILE.value), str, f"{where}: field 'mode'",
                        ConfigError)
    if mode_name not in {m.value for m in Mode}:
        raise ConfigError(f"{where}: mode must be 'statefile' or 'clustered', got {mode_name!r}")
    base = Path(path).parent
    log = _path(table, "log", base, where) if "log" in table else None
    pool = table.get("pool")
    if pool is None and any(name in table for name in MGMT_FIELDS):
        raise ConfigError(f"{where}: the management API needs a 'pool' file")
    if pool is not None:
        if not isinstance(pool, str):
            raise ConfigError(f"{where}: field 'pool' must be a path string, got {pool!r}")
        agent_port = _port(table, "agent_port", where)
        vm_dir = _path(table, "vm_dir", base, where)
        try:
            pool_file = poolfile.load(_path(table, "pool", base, where))
        except PoolError as error:
            raise ConfigError(f"{where}: pool: {error}") from None
        if len(pool_file.pool.hosts) != len(hosts) and not uuid:
            raise ConfigError(f"{where}: the pool file lists {len(pool_file.pool.hosts)} "
                              f"hosts, 'hosts' {len(hosts)}: they must match, in index order "
                              "(or name this host with 'uuid')")
    key_file = _path(table, "key_file", base, where)
    ring = load_ring(key_file)
    mgmt = _management(table, base, where) if pool is not None else None
    sr = _path(table, "sr", base, where)
    return NodeConfig(
        index=index,
        hosts=hosts,
        sr=sr,
        key=ring.current,
        timing=timing,
        mode=Mode(mode_name),
        status_socket=_path(table, "status_socket", base, where),
        log=log,
        pool=pool_file if pool is not None else None,
        agent_port=agent_port if pool is not None else 0,
        vm_dir=vm_dir if pool is not None else None,
        mgmt=mgmt,
        http=_http(table, mgmt, where),
        alert_dir=_path(table, "alert_dir", base, where) if "alert_dir" in table else None,
        guest_lock=_need(table, "guest_lock", bool, where) if "guest_lock" in table else True,
        unsafe_watchdog_delay=_unsafe_watchdog_delay(table, where),
        key_file=key_file,
        ring=ring,
        slots=slots,
        uuid=uuid,
        name=name,
        watchdog_device=_watchdog_device(table, base, where),
        heartbeat_srs=_heartbeat_srs(table, base, where, sr),
    )


def _heartbeat_srs(table: dict[str, Any], base: Path, where: str,
                   sr: Path) -> tuple[tuple[str, Path], ...]:
    """``heartbeat_srs``: SR uuid -> path, every uuid printable and not the default's,
    no two at one path (``sr`` is the default's)."""
    srs = checked(table.get("heartbeat_srs", {}), dict, f"{where}: field 'heartbeat_srs'",
                  ConfigError)
    if len(srs) > MAX_HEARTBEAT_SRS:
        raise ConfigError(f"{where}: heartbeat_srs maps {len(srs)} SRs; at most "
                          f"{MAX_HEARTBEAT_SRS}")
    mapped = []
    for uuid in srs:
        if not uuid or len(uuid) > MAX_SR_ID or not uuid.isprintable():
            raise ConfigError(f"{where}: heartbeat_srs: an SR uuid is 1 to {MAX_SR_ID} "
                              f"printable characters, got {brief(uuid)}")
        if uuid == DEFAULT_HEARTBEAT_SR:
            raise ConfigError(f"{where}: heartbeat_srs: {uuid!r} is the SR 'sr' names; "
                              "map only the others here")
        mapped.append((uuid, _path(srs, uuid, base, f"{where}: heartbeat_srs")))
    paths = [path for _, path in mapped] + [sr]
    if len(set(paths)) != len(paths):
        raise ConfigError(f"{where}: heartbeat_srs: two SRs at one path; each SR is a "
                          "volume of its own")
    return tuple(mapped)
