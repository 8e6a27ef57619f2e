"""Pool definition files: the pool model in TOML, checked with errors that say what to fix.

Rules:

* One file describes a pool: ``[pool]`` settings (``name``: 1 to 64
  printable characters, default ``pool``, written only when it is not the
  default), then ``[[host]]`` (in HA index order), ``[[sr]]``, ``[[network]]``
  and ``[[vm]]`` tables. Memory is in MiB. A VM may carry a ``command`` (the
  process driver runs it; the default is the guest program).
* Every field is checked before anything is used; an error names the file,
  the table and the field. Unknown fields are refused (a typo must not pass
  silently as a default). Types are checked by
  :func:`~hacluster.model.tomlfile.checked`: no bool for a number, no NaN,
  infinity or number beyond 2**53.
* :func:`dump` writes what :func:`load` reads, so a lab can write the pool it
  starts and a test can read it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacluster.core.pool import SR, VM, Host, Network, Pool, PoolError, Power, Priority
from hacluster.model.tomlfile import checked, read_toml, toml_fields

POOL_FIELDS = {"name", "host_failures_to_tolerate", "allow_overcommit",
               "reboot_vm_on_internal_shutdown", "best_effort_attempts"}
DEFAULT_NAME = "pool"
MAX_NAME = 64  # a pool's name also names its CA, whose X.509 fields hold 64 characters
HOST_FIELDS = {"uuid", "name", "memory", "overhead", "enabled", "address", "devices"}
SR_FIELDS = {"uuid", "name", "shared", "plugged"}
NETWORK_FIELDS = {"uuid", "name", "plugged"}
VM_FIELDS = {"uuid", "name", "memory", "priority", "order", "start_delay", "power", "host",
             "disks", "networks", "local_cd", "devices", "command", "ready", "ready_command"}


@dataclass(frozen=True)
class PoolFile:
    pool: Pool
    commands: dict[str, list[str]] = field(default_factory=dict)  # vm uuid -> command
    name: str = DEFAULT_NAME  # the pool's name-label (a new database starts with it)
    ready_commands: dict[str, list[str]] = field(default_factory=dict)  # vm uuid -> check


class _Table:
    """One TOML table, read field by field with the place named in every error."""

    def __init__(self, data: Any, where: str, known: set[str]) -> None:
        if not isinstance(data, dict):
            raise PoolError(f"{where}: expected a table")
        unknown = sorted(set(data) - known)
        if unknown:
            raise PoolError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        self.data = data
        self.where = where

    def get(self, name: str, kind: type, default: Any = None) -> Any:
        if name not in self.data:
            if default is None:
                raise PoolError(f"{self.where}: missing field {name!r}")
            return default
        return checked(self.data[name], kind, f"{self.where}: field {name!r}", PoolError)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name, list, [])
        if not all(isinstance(v, str) for v in value):
            raise PoolError(f"{self.where}: field {name!r} must be a list of strings")
        return tuple(value)


def _each(data: dict[str, Any], key: str, where: str, known: set[str],
          build: Callable[[_Table], Any]) -> list[Any]:
    entries = data.get(key, [])
    if not isinstance(entries, list):
        raise PoolError(f"{where}: [[{key}]] must be an array of tables")
    return [build(_Table(e, f"{where}: {key}[{i}]", known)) for i, e in enumerate(entries)]


def parse(data: dict[str, Any], where: str) -> PoolFile:
    settings = _Table(data.get("pool", {}), f"{where}: [pool]", POOL_FIELDS)
    commands: dict[str, list[str]] = {}
    ready_commands: dict[str, list[str]] = {}

    def host(t: _Table) -> Host:
        return Host(t.get("uuid", str), t.get("name", str), t.get("memory", int),
                    t.get("overhead", int, 0), t.get("enabled", bool, True),
                    t.get("address", str, ""), t.strings("devices"))

    def sr(t: _Table) -> SR:
        return SR(t.get("uuid", str), t.get("name", str), t.get("shared", bool),
                  frozenset(t.strings("plugged")))

    def network(t: _Table) -> Network:
        return Network(t.get("uuid", str), t.get("name", str), frozenset(t.strings("plugged")))

    def vm(t: _Table) -> VM:
        priority = t.get("priority", str, "")
        power = t.get("power", str, "halted")
        try:
            prio, state = Priority(priority), Power(power)
        except ValueError:
            raise PoolError(f"{t.where}: priority must be restart, best-effort or \"\" and "
                            f"power running, halted or suspended, got {priority!r}, "
                            f"{power!r}") from None
        resident = t.get("host", str, "") or None
        made = VM(t.get("uuid", str), t.get("name", str), t.get("memory", int), prio,
                  t.get("order", int, 0), t.get("start_delay", float, 0.0), state, resident,
                  t.strings("disks"), t.strings("networks"), t.get("local_cd", bool, False),
                  t.strings("devices"), t.get("ready", str, ""))
        if "command" in t.data:
            commands[made.uuid] = list(t.strings("command"))
        if (made.ready == "command") != ("ready_command" in t.data):
            raise PoolError(f"{t.where}: ready = \"command\" and ready_command go together "
                            "(the command that exits 0 once the VM is ready)")
        if made.ready == "command":
            ready_commands[made.uuid] = list(t.strings("ready_command"))
            if not ready_commands[made.uuid]:
                raise PoolError(f"{t.where}: ready_command is empty")
        return made

    try:
        pool = Pool(
            hosts=tuple(_each(data, "host", where, HOST_FIELDS, host)),
            srs=tuple(_each(data, "sr", where, SR_FIELDS, sr)),
            networks=tuple(_each(data, "network", where, NETWORK_FIELDS, network)),
            vms=tuple(_each(data, "vm", where, VM_FIELDS, vm)),
            host_failures_to_tolerate=settings.get("host_failures_to_tolerate", int, 0),
            allow_overcommit=settings.get("allow_overcommit", bool, False),
            reboot_vm_on_internal_shutdown=settings.get("reboot_vm_on_internal_shutdown", bool,
                                                        True),
            best_effort_attempts=settings.get("best_effort_attempts", int, 1),
        )
    except PoolError as error:
        text = str(error)
        raise PoolError(text if text.startswith(where) else f"{where}: {text}") from None
    unknown_tables = sorted(set(data) - {"pool", "host", "sr", "network", "vm"})
    if unknown_tables:
        raise PoolError(f"{where}: unknown table(s) {unknown_tables}")
    name = settings.get("name", str, DEFAULT_NAME)
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise PoolError(f"{where}: [pool]: name must be 1 to {MAX_NAME} printable characters, "
                        f"got {name!r}")
    return PoolFile(pool, commands, name, ready_commands)


def load(path: str | Path) -> PoolFile:
    return parse(read_toml(path, PoolError), str(path))


def to_data(pool_file: PoolFile) -> dict[str, Any]:
    """The plain-data form :func:`parse` reads back as the same pool."""
    pool = pool_file.pool
    vms = []
    for v in pool.vms:
        extra = {"command": pool_file.commands[v.uuid]} if v.uuid in pool_file.commands else {}
        vms.append(dict(
            uuid=v.uuid, name=v.name, memory=v.memory, priority=v.priority.value,
            order=v.order, start_delay=v.start_delay, power=v.power.value,
            host=v.resident or "", disks=list(v.disks), networks=list(v.networks),
            local_cd=v.local_cd, devices=list(v.devices), **extra,
            **({"ready": v.ready} if v.ready else {}),
            **({"ready_command": pool_file.ready_commands[v.uuid]}
               if v.uuid in pool_file.ready_commands else {})))
    named = {} if pool_file.name == DEFAULT_NAME else {"name": pool_file.name}
    return {
        "pool": dict(**named, host_failures_to_tolerate=pool.host_failures_to_tolerate,
                     allow_overcommit=pool.allow_overcommit,
                     reboot_vm_on_internal_shutdown=pool.reboot_vm_on_internal_shutdown,
                     best_effort_attempts=pool.best_effort_attempts),
        "host": [dict(uuid=h.uuid, name=h.name, memory=h.memory_total,
                      overhead=h.memory_overhead, enabled=h.enabled, address=h.address,
                      **({"devices": list(h.devices)} if h.devices else {}))
                 for h in pool.hosts],
        "sr": [dict(uuid=s.uuid, name=s.name, shared=s.shared, plugged=sorted(s.plugged))
               for s in pool.srs],
        "network": [dict(uuid=n.uuid, name=n.name, plugged=sorted(n.plugged))
                    for n in pool.networks],
        "vm": vms,
    }


def dump(pool_file: PoolFile) -> str:
    """TOML text that :func:`load` reads back as the same pool."""
    data = to_data(pool_file)
    out = ["[pool]", *toml_fields(**data.pop("pool"))]
    for table, entries in data.items():
        for entry in entries:
            out += ["", f"[[{table}]]", *toml_fields(**entry)]
    return "\n".join(out) + "\n"
