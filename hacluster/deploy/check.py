"""``hacluster node --check``: is this host ready to run, without starting anything.

Rules:

* The check reads and never writes: the configuration (the node's own loader,
  :func:`hacluster.node.config.load_node`, so every refusal is the one the
  daemon would give; a host waiting to join is checked as far as it can be:
  not the SR's slot count, which it learns when it joins), the management
  API's certificate, key and CA, the SR (opened as the node opens it, its
  heartbeat region read once) and this host's backup
  of the pool database. It binds no port, writes no boot counter, starts no
  process.
* Each finding is ``ok``, ``warn`` (the node would run, but look) or
  ``FAIL`` (it would not, or not safely). A failed configuration stops the
  check there; a failed SR skips the layout checks, never the timing.
* The SR: reachable, ``O_DIRECT`` or buffered (a warning: hosts may read
  stale slots through a page cache), big enough (the heartbeat region and the
  minimum metadata region), its global block authenticated with this host's
  pool key (else: wrong key, or another pool's SR), the host count it was
  formatted for equal to the configuration's, its generation and state; the
  slots, which hosts wrote them in this generation; this host's backup of
  the database, whether it expects another generation with HA on.
* The timing: every rule of :meth:`~hacluster.core.timing.Timing.rules` for
  the configured T, its two sides and its margin, and the verdict of
  :meth:`~hacluster.core.timing.Timing.validate`.
* The margins: if this host's daemon runs, what it measured (heartbeat
  gaps, slot I/O, loop lag: :mod:`hacluster.node.margins`) against the
  limits of the configured T, which may be a new one under consideration: a
  figure at half its limit or more is a warning.
* Exit status: 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from hacluster.core.events import SlotCorrupt
from hacluster.core.messages import Report
from hacluster.core.timing import Inequality, TimingError
from hacluster.mgmt.tls import CertFiles, TLSError, load_certificate, server_context
from hacluster.model.address import Address, ConfigError
from hacluster.node.config import Candidate, NodeConfig, load_node
from hacluster.node.heartbeat_sr import describe
from hacluster.node.margins import margins
from hacluster.node.plane import backup_path, read_backup
from hacluster.node.status import query_status
from hacluster.storage.sr import (
    BLOCK,
    HEARTBEAT_REGION,
    GlobalBlock,
    PoolState,
    SRError,
    decode_slot,
    slot_offset,
)
from hacluster.storage.volume import MIN_SIZE, MiB, Volume, probe
from hacluster.wire.codec import Sealer

EXPIRY_WARNING = datetime.timedelta(days=30)


class Level(Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    level: Level
    topic: str
    text: str


@dataclass
class CheckReport:
    path: Path
    findings: list[Finding] = field(default_factory=list)
    rules: list[Inequality] = field(default_factory=list)
    verdict: str = ""  # Timing.validate's

    def add(self, level: Level, topic: str, text: str) -> None:
        self.findings.append(Finding(level, topic, text))

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.level is Level.FAIL]

    @property
    def ready(self) -> bool:
        return not self.failed

    def render(self) -> str:
        lines = [f"hacluster node --check {self.path}"]
        lines += [f"  {f.level.value:4}  {f.topic:9} {f.text}" for f in self.findings]
        if self.rules:
            lines.append(f"timing: {self.verdict}")
            width = max(len(rule.name) for rule in self.rules)
            for rule in self.rules:
                level = Level.OK if rule.holds else Level.FAIL
                margin = f"{rule.margin:.3f}" + (f" {rule.unit}" if rule.unit else "")
                lines.append(f"  {level.value:4}  {rule.name:{width}}  margin {margin:>9}  "
                             f"{rule.formula}")
        warnings = sum(f.level is Level.WARN for f in self.findings)
        lines.append("ready: nothing failed" + (f", {warnings} warning(s)" if warnings else "")
                     if self.ready else f"NOT READY: {len(self.failed)} check(s) failed")
        return "\n".join(lines) + "\n"


def check_node(path: Path) -> CheckReport:
    """Every check of this module on the host whose configuration is ``path``."""
    report = CheckReport(path)
    try:
        loaded = load_node(path)
    except ConfigError as error:
        report.add(Level.FAIL, "config", str(error))
        return report
    candidate = loaded if isinstance(loaded, Candidate) else None
    config = loaded.config if isinstance(loaded, Candidate) else loaded
    _config(config, candidate, report)
    _timing(config, report)
    _margins(config, report)
    _other_srs(config, report)
    try:
        volume = probe(config.sr)
    except SRError as error:
        report.add(Level.FAIL, "sr", str(error))
        return report
    _sr(config, volume, report, joined=candidate is None)
    return report


def _config(config: NodeConfig, candidate: Candidate | None, report: CheckReport) -> None:
    networks = len(config.addresses)
    on = (f"({', '.join(map(str, config.addresses))}; {networks} heartbeat "
          f"network{'s' if networks > 1 else ''}), {config.mode.value} mode, "
          f"T={config.timing.T:g} s")
    if candidate is None:
        report.add(Level.OK, "config", f"host {config.index} of {len(config.hosts)} {on}")
    else:
        assert config.mgmt is not None
        endpoint = Address(config.address.host, config.mgmt.port)
        report.add(Level.OK, "config", f"waiting to join as {config.name!r} "
                   f"({config.my_uuid}, {candidate.memory} MiB) {on}: start it, then "
                   f"'hactl -s {endpoint} pool-join master-address=MASTER'")
    if config.keys.other is not None:
        report.add(Level.WARN, "key", "a pool key rotation is under way here (a second key "
                   "file beside pool.key): finish it with hactl pool-key-rotate")
    if config.pool is not None:
        pool = config.pool.pool
        protected = sum(vm.priority.protected for vm in pool.vms)
        report.add(Level.OK, "pool", f"pool {config.pool.name!r}: {len(pool.hosts)} hosts, "
                   f"{len(pool.vms)} VMs ({protected} protected); this host is "
                   f"{config.name or pool.hosts[config.index].name!r}")
    if config.mgmt is not None:
        _certificate(config, report)


def _certificate(config: NodeConfig, report: CheckReport) -> None:
    mgmt = config.mgmt
    assert mgmt is not None
    try:
        server_context(CertFiles(mgmt.cert, mgmt.key), mgmt.ca)  # the pair and the CA load
        cert, ca = load_certificate(mgmt.cert), load_certificate(mgmt.ca)
        cert.verify_directly_issued_by(ca)
    except TLSError as error:
        report.add(Level.FAIL, "tls", str(error))
        return
    except (ValueError, TypeError, InvalidSignature):
        report.add(Level.FAIL, "tls", f"{mgmt.cert} was not issued by the pool CA {mgmt.ca}: "
                   "issue it again with this pool's CA")
        return
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        listed = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        listed = set()
    missing = [a.host for a in config.addresses if a.host not in listed]  # both canonical
    expires = cert.not_valid_after_utc
    left = expires - datetime.datetime.now(datetime.UTC)
    if missing:
        report.add(Level.FAIL, "tls", f"{mgmt.cert} does not list this host's address(es) "
                   f"{missing}: hactl and the other hosts would refuse it; issue it again")
    elif left <= datetime.timedelta(0):
        report.add(Level.FAIL, "tls", f"{mgmt.cert} expired on {expires:%Y-%m-%d}: issue it "
                   "again")
    else:
        level = Level.WARN if left < EXPIRY_WARNING else Level.OK
        report.add(level, "tls", f"{mgmt.cert} issued by the pool CA for "
                   f"{sorted(listed)}, valid until {expires:%Y-%m-%d}; "
                   f"management API on port {mgmt.port}")


def _timing(config: NodeConfig, report: CheckReport) -> None:
    timing = config.timing
    report.rules = timing.rules()
    try:
        timing.validate()
        report.verdict = (f"T={timing.T:g} s: every rule holds (fence window "
                          f"{timing.fence_window:.2f} s, watchdog lease "
                          f"{timing.lease:.2f} s)")
    except TimingError as error:
        report.verdict = str(error)
        report.add(Level.FAIL, "timing", str(error))


def _margins(config: NodeConfig, report: CheckReport) -> None:
    """What the running daemon measured, judged against this configuration's T (which
    may be a new one under consideration); nothing if no daemon answers here."""
    try:
        status = query_status(config.status_socket)
    except (OSError, ValueError):
        report.add(Level.OK, "margins", "no daemon runs here: no measured margins to judge "
                   "(hactl pool-ha-margins timeout=T judges a running pool's)")
        return
    rows = margins(status, config.timing)
    low = [row for row in rows if row["low"]]
    for row in low:
        report.add(Level.WARN, "margins", f"{row['what']}: worst {row['worst']:.3f} s is "
                   f"{row['used'] * 100:.0f}% of {row['limit_name']} {row['limit']:.3f} s at "
                   f"T={config.timing.T:g} s: too close, a false fence is near")
    if rows and not low:
        worst = rows[0]
        report.add(Level.OK, "margins", f"the running daemon's measurements fit T="
                   f"{config.timing.T:g} s: the closest, {worst['what']}, uses "
                   f"{worst['used'] * 100:.0f}% of {worst['limit_name']}")


def _other_srs(config: NodeConfig, report: CheckReport) -> None:
    """Each SR of ``heartbeat_srs`` (where the pool may move): reachable, big enough,
    O_DIRECT, and what it holds."""
    for uuid, _ in config.heartbeat_srs:
        found = describe(config, config.keys, uuid)
        name = f"sr {uuid}"
        if "error" in found:
            report.add(Level.FAIL, name, str(found["error"]))
            continue
        where = f"{found['path']}: {found['size'] / MiB:.1f} MiB"
        if found["size"] < MIN_SIZE:
            report.add(Level.FAIL, name, f"{where}; a heartbeat SR needs at least "
                       f"{MIN_SIZE // MiB} MiB")
        elif not found["direct"]:
            report.add(Level.WARN, name, f"{where}, refuses O_DIRECT: pool-ha-enable will "
                       "refuse it while the SR in use takes O_DIRECT")
        elif found.get("holds"):
            report.add(Level.WARN, name, f"{where}, {found['holds']}: moving the pool there "
                       "needs pool-ha-enable --force")
        else:
            held = (f"this pool's SR, generation {found['generation']} ({found['state']})"
                    if "generation" in found else "empty")
            report.add(Level.OK, name, f"{where}, O_DIRECT, {held}")


def _sr(config: NodeConfig, volume: Volume, report: CheckReport, joined: bool) -> None:
    where = str(volume.path)
    report.add(Level.OK, "sr", f"{where}: {volume.kind} of {volume.size / MiB:.1f} MiB, "
               "reachable, readable")
    if volume.direct:
        report.add(Level.OK, "o_direct", "the medium takes O_DIRECT")
    else:
        report.add(Level.WARN, "o_direct", "the medium refused O_DIRECT: buffered I/O, so "
                   "hosts may read each other's slots through a page cache (a shared LUN "
                   "must take O_DIRECT)")
    if volume.size < MIN_SIZE:
        report.add(Level.FAIL, "size", f"{volume.size} bytes; an SR needs at least {MIN_SIZE}"
                   f" ({HEARTBEAT_REGION // MiB} MiB heartbeat region and the pool "
                   "database's metadata region)")
        return
    report.add(Level.OK, "size", f"heartbeat region {HEARTBEAT_REGION // MiB} MiB, metadata "
               f"region {(volume.size - HEARTBEAT_REGION) / MiB:.1f} MiB")
    try:
        header = GlobalBlock.decode(volume.head[:BLOCK], config.keys)
    except SRError as error:
        advice = {"bad magic": "not formatted (hacluster pool init), or the wrong volume",
                  "not authenticated": "this host's pool.key is not the pool's, or the "
                                       "volume holds another pool's SR"}
        hint = next((text for needle, text in advice.items() if needle in str(error)), "")
        report.add(Level.FAIL, "layout", f"{error}" + (f": {hint}" if hint else ""))
        return
    if joined and header.hosts != config.capacity:  # a candidate learns it when it joins
        report.add(Level.FAIL, "layout", f"the SR was formatted for {header.hosts} slots, "
                   f"the configuration has {config.capacity}: another pool's SR, or a "
                   "configuration of another pool")
        return
    state = {PoolState.ACTIVE: "HA on", PoolState.INIT: "HA off, never enabled",
             PoolState.INVALID: "HA off, disabled", PoolState.NONE: "no pool state"}
    level = Level.WARN if header.state is PoolState.NONE else Level.OK
    master = "none" if header.master is None else f"host {header.master}"
    report.add(level, "layout", f"global block authenticated by this pool key: "
               f"{header.hosts} slots, generation {header.generation:x}, "
               f"state {header.state.name} ({state[header.state]}), master {master}")
    _slots(config, volume, header, report)
    _backup(config, header, report)


def _slots(config: NodeConfig, volume: Volume, header: GlobalBlock,
           report: CheckReport) -> None:
    sealer = Sealer.for_slots(config.keys, header.hosts)
    now: list[int] = []
    older: list[int] = []
    unreadable: list[int] = []
    for index in range(header.hosts):
        start = slot_offset(index)
        content = decode_slot(sealer, volume.head[start:start + BLOCK], index)
        if isinstance(content, SlotCorrupt):
            unreadable.append(index)
        elif isinstance(content, Report):
            (now if content.generation == header.generation else older).append(index)
    text = f"written in this generation by hosts {now}" if now else \
        "no host has written its slot in this generation"
    if older:
        text += f"; from an earlier generation: {older}"
    report.add(Level.OK, "slots", text)
    if unreadable:
        report.add(Level.WARN, "slots", f"slots {unreadable} do not open with this pool key "
                   "(damaged, or sealed with another key)")


def _backup(config: NodeConfig, header: GlobalBlock, report: CheckReport) -> None:
    path = backup_path(config)
    if not path.exists():
        return
    db = read_backup(path, config.keys)
    if db is None:
        report.add(Level.WARN, "database", f"{path} does not open with this pool key: left "
                   "by another pool? The host takes the pool's copy when it joins")
        return
    ha = db.ha
    if ha.enabled and header.state is PoolState.ACTIVE and ha.sr_generation != header.generation:
        report.add(Level.WARN, "database", f"this host last knew HA on at generation "
                   f"{ha.sr_generation:x}, the SR holds {header.generation:x}: HA was enabled "
                   "again while it was away (it joins the new generation), or the SR was "
                   "formatted anew under the pool")
    else:
        report.add(Level.OK, "database", f"this host's copy of the pool database: generation "
                   f"{db.generation}, HA {'on' if ha.enabled else 'off'}")
