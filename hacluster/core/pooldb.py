"""The pool database: the pool model, HA settings, master and messages (spec section 7).

Rules:

* A database is an immutable value with a ``generation``. :func:`apply` checks
  a change completely, then returns a new database one generation higher; a
  refused change raises :class:`~hacluster.core.pool.PoolError` saying why and
  what to do, and the database it was given is untouched.
* A change is plain data (a map of strings, numbers and maps), so the redo
  log stores it as it is and replaying it gives the same database.
* Settable parameters carry their xe names and arrive as text; each is
  converted and range-checked here, in one place, for every caller.
* While HA is enabled and overcommit is not allowed, a change that would
  leave the pool overcommitted (the plan covers fewer host failures than
  configured) is refused, unless the pool already was and the change does
  not ask for more: operators are told to lower the tolerance, allow
  overcommit or disable HA first. ``live`` (host uuids) is the liveset the
  plan is computed on.
* Hosts join (``host-join``: a new host, running nothing, plugged into every
  shared SR and every network, as xe's pool-join does) and leave
  (``host-eject``: every VM the record places on it must be placed where it
  runs now, elsewhere; the failures to tolerate shrink to fit).
* VMs are installed (``vm-install``: halted, on no host, with the settable
  VM parameters and optional passthrough devices) and uninstalled
  (``vm-uninstall``). ``vm-power`` records what the operator did to a VM:
  started, resumed or moved it (``running`` on a host), shut it down
  (``halted``) or suspended it (``suspended``). So a new master never
  restarts a VM the operator halted nor forgets a suspended one. A protected
  VM cannot be recorded halted: the operator removes its protection first.
  Where a VM runs after HA restarted it is the master's live view, not
  written here: callers check "is it running" and the plan on that view.
* ``ha-config:timeout`` has the bounds of the timing rules, no other:
  :func:`~hacluster.core.timing.Timing.derive` names a violated rule, and T
  is at most :data:`~hacluster.core.timing.MAX_TIMEOUT`.
* At most :data:`KEEP_MESSAGES` messages are kept; older ones are dropped.
* Any change may carry an ``audit`` map (who: the credential's id, role and
  name; what: the verb, its parameters, already redacted, and flags; when:
  wall-clock time given by the caller): it is recorded in the same
  generation as the change, so a change is never in force without its record.
  The ``audit`` op records one alone (a verb that changed something outside
  the database). At most :data:`KEEP_AUDIT` records are kept, the newest.
* The deny list holds credential ids the management API refuses; ids are
  made and checked by :mod:`hacluster.mgmt.roles`, stored here as given
  (at most :data:`MAX_DENIED`, never dropped: a full list refuses more).
  Denying a denied id or allowing one not denied is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hacluster.core.pool import VM, Host, Pool, PoolError, Power, Priority
from hacluster.core.recovery import overcommitted, tolerance
from hacluster.core.timing import MAX_TIMEOUT, Timing, TimingError

KEEP_MESSAGES = 1000
KEEP_AUDIT = 1000
MAX_DENIED = 1000
MAX_ID = 200  # characters of a credential id
MAX_VM_ID = 128  # characters of an installed VM's uuid
REBALANCE_MODES = ("auto", "manual", "")  # other-config:ha-rebalance ("": manual)
DEFAULT_HEARTBEAT_SR = "heartbeat-sr"  # the SR node.toml's 'sr' names: a pool's first
MAX_SR_ID = 128  # characters of a heartbeat SR's uuid


@dataclass(frozen=True)
class HASettings:
    enabled: bool = False
    timeout: float = 60.0  # ha-config:timeout, T
    heartbeat_sr: str = ""  # uuid of the heartbeat SR ("": the default one)
    sr_generation: int = 0  # the SR generation of this enable

    @property
    def sr(self) -> str:
        """The heartbeat SR the pool uses (or last used, with HA off)."""
        return self.heartbeat_sr or DEFAULT_HEARTBEAT_SR


@dataclass(frozen=True)
class Message:
    ref: int
    name: str
    priority: int
    obj: str
    body: str
    time: float  # wall clock (seconds since the epoch), given by the caller


@dataclass(frozen=True)
class AuditRecord:
    ref: int
    time: float  # wall clock (seconds since the epoch), given by the caller
    credential: str  # the credential's id
    role: str
    name: str
    verb: str
    params: tuple[tuple[str, str], ...]  # redacted by the caller
    flags: tuple[str, ...]


@dataclass(frozen=True)
class PoolDB:
    generation: int
    pool: Pool
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    name: str = "pool"
    master: str = ""  # host uuid of the pool master
    ha: HASettings = HASettings()
    other_config: Mapping[str, str] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()
    audit: tuple[AuditRecord, ...] = ()
    denied: frozenset[str] = frozenset()  # credential ids
    ready_commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # from the file

    def messages_since(self, ref: int) -> tuple[Message, ...]:
        return tuple(m for m in self.messages if m.ref > ref)

    def audit_since(self, ref: int) -> tuple[AuditRecord, ...]:
        return tuple(r for r in self.audit if r.ref > ref)


def apply(db: PoolDB, change: Mapping[str, Any], live: Iterable[str] | None = None,
          replay: bool = False) -> PoolDB:
    """``db`` with ``change`` made, one generation higher; :class:`PoolError` if refused.

    ``replay`` (a change read back from the redo log, accepted when it was
    made) skips the plan check, whose answer depends on the liveset of then."""
    op = change.get("op")
    handler = _OPS.get(op) if isinstance(op, str) else None
    if handler is None:
        raise PoolError(f"unknown change {op!r}; known: {sorted(_OPS)}")
    new = handler(db, change)
    if op in _PLANNED and not replay:
        _check_plan(db, new, live)
    if "audit" in change:
        new = _audited(new, change["audit"])
    elif op == "audit":
        raise PoolError("an audit change needs its audit record")
    return replace(new, generation=db.generation + 1)


# ---------------------------------------------------------------- changes
def _fields(change: Mapping[str, Any]) -> Mapping[str, str]:
    fields = change.get("fields")
    if not isinstance(fields, Mapping) or not fields or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
        raise PoolError("nothing to set: give one or more key=value parameters")
    return fields


def _pool_set(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    pool, name, other = db.pool, db.name, dict(db.other_config)
    for key, value in _fields(change).items():
        if key == "name-label":
            name = _text(key, value)
        elif key == "ha-host-failures-to-tolerate":
            pool = replace(pool, host_failures_to_tolerate=_whole(key, value))
        elif key == "ha-allow-overcommit":
            pool = replace(pool, allow_overcommit=_flag(key, value))
        elif key == "ha-reboot-vm-on-internal-shutdown":
            pool = replace(pool, reboot_vm_on_internal_shutdown=_flag(key, value))
        elif key == "ha-best-effort-attempts":
            pool = replace(pool, best_effort_attempts=_whole(key, value))
        elif key.startswith("other-config:") and len(key) > len("other-config:"):
            if key == "other-config:ha-rebalance" and value not in REBALANCE_MODES:
                raise PoolError(f"other-config:ha-rebalance must be one of "
                                f"{', '.join(repr(m) for m in REBALANCE_MODES)}, got {value!r}")
            if value:
                other[key.removeprefix("other-config:")] = value
            else:
                other.pop(key.removeprefix("other-config:"), None)
        else:
            raise PoolError(f"pool parameter {key!r} cannot be set")
    return replace(db, pool=pool, name=name, other_config=other)


def _vm_set(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    vm = db.pool.vm(str(change.get("vm", "")))
    for key, value in _fields(change).items():
        vm = _vm_field(vm, key, value)
    return replace(db, pool=db.pool.with_vm(_ready_checked(db, vm)))


def _ready_checked(db: PoolDB, vm: VM) -> VM:
    """``vm``, if its readiness can be checked: ``command`` needs a readiness command,
    which only the pool file declares (no credential chooses what root runs)."""
    if vm.ready == "command" and vm.uuid not in db.ready_commands:
        raise PoolError(f"VM {vm.name}: ready=command needs its ready_command, which only "
                        "the pool file declares; use ready=file or \"\"")
    return vm


def _vm_field(vm: VM, key: str, value: str) -> VM:
    """``vm`` with one settable parameter (its xe name, as text) set."""
    if key == "name-label":
        return replace(vm, name=_text(key, value))
    if key == "ha-restart-priority":
        try:
            priority = Priority(value)
        except ValueError:
            raise PoolError(f"ha-restart-priority must be restart, best-effort or \"\" "
                            f"(unprotected), got {value!r}") from None
        return replace(vm, priority=priority)
    if key == "order":
        return replace(vm, order=_whole(key, value))
    if key == "start-delay":
        return replace(vm, start_delay=_seconds(key, value))
    if key == "ready":
        return replace(vm, ready=value)
    raise PoolError(f"VM parameter {key!r} cannot be set")


def _vm_install(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    """A new VM: halted, on no host; ``fields`` hold name-label and memory (MiB),
    optionally the settable parameters and ``devices`` (comma-separated)."""
    uuid = change.get("vm")
    if not (isinstance(uuid, str) and uuid and len(uuid) <= MAX_VM_ID and uuid.isprintable()
            and not uuid.isspace()):
        raise PoolError(f"a VM uuid is 1 to {MAX_VM_ID} printable characters, got {uuid!r}")
    if any(vm.uuid == uuid for vm in db.pool.vms):
        raise PoolError(f"a VM with uuid {uuid} is already installed")
    fields = dict(_fields(change))
    if "name-label" not in fields or "memory" not in fields:
        raise PoolError("vm-install needs name-label and memory (MiB)")
    name, memory = _text("name-label", fields.pop("name-label")), fields.pop("memory")
    if not (memory.isascii() and memory.isdigit()) or int(memory) <= 0 or len(memory) > 9:
        raise PoolError(f"memory must be MiB, a whole number above 0, got {memory!r}")
    devices = tuple(d.strip() for d in fields.pop("devices", "").split(",") if d.strip())
    vm = VM(uuid, name, int(memory), devices=devices)
    for key, value in fields.items():
        vm = _vm_field(vm, key, value)
    return replace(db, pool=db.pool.with_vm(_ready_checked(db, vm)))


def _vm_uninstall(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    vm = db.pool.vm(str(change.get("vm", "")))
    commands = {uuid: command for uuid, command in db.commands.items() if uuid != vm.uuid}
    ready = {uuid: command for uuid, command in db.ready_commands.items() if uuid != vm.uuid}
    vms = tuple(v for v in db.pool.vms if v.uuid != vm.uuid)
    return replace(db, pool=replace(db.pool, vms=vms), commands=commands, ready_commands=ready)


def _vm_power(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    """The operator started, resumed or moved a VM (``running`` on ``host``), shut
    it down (``halted``) or suspended it (``suspended``)."""
    vm = db.pool.vm(str(change.get("vm", "")))
    try:
        power = Power(change.get("power"))
    except ValueError:
        raise PoolError(f"power must be running, halted or suspended, "
                        f"got {change.get('power')!r}") from None
    host = change.get("host")
    if power is Power.RUNNING:
        host = db.pool.host(str(host or "")).uuid
    elif host is not None:
        raise PoolError(f"a {power.value} VM is on no host, got host {host!r}")
    if power is Power.HALTED and vm.priority.protected:
        raise PoolError(f"VM {vm.name} is protected by HA (ha-restart-priority=restart): "
                        f"HA would restart it. Remove its protection first: vm-param-set "
                        f"uuid={vm.uuid} ha-restart-priority= ; then shut it down")
    return replace(db, pool=db.pool.with_vm(replace(vm, power=power, resident=host)))


def _host_enabled(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    host = db.pool.host(str(change.get("host", "")))
    enabled = change.get("enabled")
    if not isinstance(enabled, bool):
        raise PoolError("host-enabled needs enabled=true|false")
    hosts = tuple(replace(h, enabled=enabled) if h.uuid == host.uuid else h
                  for h in db.pool.hosts)
    return replace(db, pool=replace(db.pool, hosts=hosts))


def _host_join(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    """A new host becomes a member (``pool-join``): it runs nothing yet."""
    fields = change.get("host")
    if not isinstance(fields, Mapping):
        raise PoolError("host-join needs the host's uuid, name and memory")
    uuid, name = fields.get("uuid"), fields.get("name")
    memory, address = fields.get("memory"), fields.get("address", "")
    if not (isinstance(uuid, str) and uuid and isinstance(name, str) and name
            and isinstance(address, str)):
        raise PoolError("host-join needs the host's uuid and name (non-empty text)")
    if not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0:
        raise PoolError(f"host-join needs the host's memory in MiB (a whole number > 0), "
                        f"got {memory!r}")
    if any(h.uuid == uuid for h in db.pool.hosts):
        raise PoolError(f"host {uuid} is already in the pool")
    host = Host(uuid, name, memory, address=address)
    # as xe's pool-join: the new host is plugged into every shared SR and every network
    srs = tuple(replace(sr, plugged=sr.plugged | {uuid}) if sr.shared else sr
                for sr in db.pool.srs)
    networks = tuple(replace(n, plugged=n.plugged | {uuid}) for n in db.pool.networks)
    return replace(db, pool=replace(db.pool, hosts=(*db.pool.hosts, host), srs=srs,
                                    networks=networks))


def _host_eject(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    """A host leaves the pool (``pool-eject``, once its VMs were moved off): the VMs
    the record still places on it are placed where ``resident`` says they run now,
    and the failures to tolerate shrink to fit the smaller pool."""
    host = db.pool.host(str(change.get("host", "")))
    hosts = tuple(h for h in db.pool.hosts if h.uuid != host.uuid)
    if not hosts:
        raise PoolError("the last host cannot leave the pool")
    resident = change.get("resident", {})
    if not isinstance(resident, Mapping):
        raise PoolError("host-eject: resident must map VMs to hosts")
    vms = []
    for vm in db.pool.vms:
        if vm.resident == host.uuid:
            now = resident.get(vm.uuid)
            if not isinstance(now, str) or now == host.uuid or now not in {
                    h.uuid for h in hosts}:
                raise PoolError(f"host {host.name} still runs {vm.name}: move it first")
            vm = replace(vm, resident=now)
        vms.append(vm)
    tolerate = min(db.pool.host_failures_to_tolerate, len(hosts) - 1)
    srs = tuple(replace(sr, plugged=sr.plugged - {host.uuid}) for sr in db.pool.srs)
    networks = tuple(replace(n, plugged=n.plugged - {host.uuid}) for n in db.pool.networks)
    return replace(db, pool=replace(db.pool, hosts=hosts, vms=tuple(vms), srs=srs,
                                    networks=networks, host_failures_to_tolerate=tolerate))


def _ha_enable(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    if db.ha.enabled:
        raise PoolError("HA is already enabled on this pool")
    timeout = change.get("timeout")
    sr = change.get("heartbeat_sr")
    generation = change.get("sr_generation")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise PoolError(f"ha-config:timeout must be seconds, got {timeout!r}")
    try:
        if not timeout <= MAX_TIMEOUT:
            raise TimingError("timeout-ceiling", f"T={timeout} s is above {MAX_TIMEOUT:g} s")
        Timing.derive(float(timeout))
    except TimingError as error:
        raise PoolError(f"ha-config:timeout={timeout!r}: {error}") from None
    if not isinstance(sr, str) or not sr or not isinstance(generation, int):
        raise PoolError("ha-enable needs the heartbeat SR and its new generation")
    if len(sr) > MAX_SR_ID or not sr.isprintable():
        raise PoolError(f"heartbeat SR uuid {sr[:40]!r}: at most {MAX_SR_ID} printable "
                        "characters")
    return replace(db, ha=HASettings(True, float(timeout), sr, generation))


def _ha_disable(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    if not db.ha.enabled:
        raise PoolError("HA is not enabled on this pool")
    return replace(db, ha=replace(db.ha, enabled=False))


def _master(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    return replace(db, master=db.pool.host(str(change.get("host", ""))).uuid)


def _message(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    try:
        message = Message(db.messages[-1].ref + 1 if db.messages else 1,
                          str(change["name"]), int(change["priority"]), str(change["obj"]),
                          str(change["body"]), float(change["time"]))
    except (KeyError, TypeError, ValueError):
        raise PoolError("a message needs name, priority, obj, body and time") from None
    return replace(db, messages=(*db.messages[-(KEEP_MESSAGES - 1):], message))


def _audited(db: PoolDB, record: Any) -> PoolDB:
    try:
        params = record["params"]
        flags = record["flags"]
        if not isinstance(params, Mapping) or not isinstance(flags, list | tuple):
            raise TypeError("params must be a map and flags a list")
        text = {key: record[key] for key in ("credential", "role", "name", "verb")}
        if not all(isinstance(value, str) for value in
                   (*text.values(), *params.keys(), *params.values(), *flags)):
            raise TypeError("who and what are text")
        audit = AuditRecord(db.audit[-1].ref + 1 if db.audit else 1, float(record["time"]),
                            text["credential"], text["role"], text["name"], text["verb"],
                            tuple(sorted(params.items())), tuple(flags))
    except (KeyError, TypeError, ValueError) as error:
        raise PoolError(f"an audit record needs time, credential, role, name, verb, params "
                        f"and flags ({error})") from None
    return replace(db, audit=(*db.audit[-(KEEP_AUDIT - 1):], audit))


def _audit(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    return db  # the record itself is added by apply, as for any change


def _credential_id(change: Mapping[str, Any]) -> str:
    credential = change.get("credential")
    if not isinstance(credential, str) or not credential or len(credential) > MAX_ID:
        raise PoolError(f"a credential id is 1 to {MAX_ID} characters, got {credential!r}")
    return credential


def _credential_deny(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    credential = _credential_id(change)
    if credential in db.denied:
        raise PoolError(f"{credential} is already denied")
    if len(db.denied) >= MAX_DENIED:
        raise PoolError(f"the deny list is full ({MAX_DENIED} credentials): allow ones "
                        "that have expired first (credential-allow)")
    return replace(db, denied=db.denied | {credential})


def _credential_allow(db: PoolDB, change: Mapping[str, Any]) -> PoolDB:
    credential = _credential_id(change)
    if credential not in db.denied:
        raise PoolError(f"{credential} is not on the deny list")
    return replace(db, denied=db.denied - {credential})


_OPS = {"pool-set": _pool_set, "vm-set": _vm_set, "vm-install": _vm_install,
        "vm-uninstall": _vm_uninstall, "vm-power": _vm_power, "host-enabled": _host_enabled,
        "host-join": _host_join, "host-eject": _host_eject,
        "ha-enable": _ha_enable, "ha-disable": _ha_disable, "master": _master,
        "message": _message, "audit": _audit, "credential-deny": _credential_deny,
        "credential-allow": _credential_allow}
_PLANNED = {"pool-set", "vm-set", "host-enabled"}


def _check_plan(old: PoolDB, new: PoolDB, live: Iterable[str] | None) -> None:
    if not new.ha.enabled or new.pool.allow_overcommit:
        return
    hosts = list(live) if live is not None else None
    after, configured = tolerance(new.pool, hosts), new.pool.host_failures_to_tolerate
    if not overcommitted(after, configured):
        return
    if (overcommitted(tolerance(old.pool, hosts), old.pool.host_failures_to_tolerate)
            and configured <= old.pool.host_failures_to_tolerate):
        return
    raise PoolError(
        f"refused: this would break the failover plan: the pool could then tolerate "
        f"{after.max_failures} host failure(s), {configured} are configured "
        f"({after.why}). Lower ha-host-failures-to-tolerate, set "
        f"ha-allow-overcommit=true, or disable HA first (pool-ha-disable)")


# ---------------------------------------------------------------- values
def _text(key: str, value: str) -> str:
    if not value.strip():
        raise PoolError(f"{key} must not be empty")
    return value


def _whole(key: str, value: str) -> int:
    if not value.strip().isdigit():
        raise PoolError(f"{key} must be a whole number 0 or more, got {value!r}")
    return int(value)


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise PoolError(f"{key} must be a number of seconds, 0 or more, got {value!r}")
    return seconds


def _flag(key: str, value: str) -> bool:
    if value.lower() not in {"true", "false"}:
        raise PoolError(f"{key} must be true or false, got {value!r}")
    return value.lower() == "true"
