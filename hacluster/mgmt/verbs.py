"""The management verbs (xe names, spec section 10) and their parameters.

Rules:

* One table serves the CLI (parsing, help, completion) and the API server
  (which checks every request again: a client is never trusted).
* A call is ``verb key=value ... [--flag]``, as xe writes it. A key ending in
  ``:`` in the table is a map prefix (``ha-config:timeout=30``,
  ``other-config:mail-destination=...``). A key may appear once.
* Anything else is refused with :class:`UsageError` naming the verb, the
  offending word and what is accepted; nothing is sent and nothing changes.
* Every verb names the least role that may run it (:mod:`hacluster.mgmt.roles`):
  ``read-only`` for verbs that change nothing, ``operator`` for settings,
  host and VM verbs, ``emergency`` for the emergency verbs and for taking a
  credential off the deny list. The API server refuses a call whose
  credential's role is lower before any handler runs.
* ``local`` verbs act on the host that receives them (the emergency
  procedures work without a master); the others run on the master, and a
  host that is not master forwards them there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hacluster.mgmt.roles import Credential, Role

READ, OPERATE, EMERGENCY = Role.READ_ONLY, Role.OPERATOR, Role.EMERGENCY


class UsageError(ValueError):
    """A call that is not well formed, with what is accepted."""


@dataclass(frozen=True)
class Verb:
    name: str
    summary: str
    role: Role  # the least role that may run it
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    local: bool = False
    changes: bool = False  # writes the pool database

    def accepts(self, key: str) -> bool:
        return key in self.params or any(
            p.endswith(":") and key.startswith(p) and len(key) > len(p) for p in self.params)


POOL_SETTABLE = ("name-label", "ha-host-failures-to-tolerate", "ha-allow-overcommit",
                 "ha-reboot-vm-on-internal-shutdown", "ha-best-effort-attempts", "other-config:")
VM_SETTABLE = ("name-label", "ha-restart-priority", "order", "start-delay", "ready")

_TABLE = (
    Verb("status", "the pool at a glance: hosts, liveset, master, plan, VMs, memory", READ),
    Verb("pool-list", "the pool's record", READ, ("params",)),
    Verb("pool-param-get", "one pool parameter", READ, ("uuid", "param-name", "param-key"),
         ("param-name",)),
    Verb("pool-param-set", "set pool parameters", OPERATE, ("uuid", *POOL_SETTABLE),
         changes=True),
    Verb("pool-ha-enable", "arm HA on every host: all hosts must be live; "
         "heartbeat-sr-uuids= another SR moves the pool there (--force formats one that "
         "holds other data)", OPERATE,
         ("heartbeat-sr-uuids", "heartbeat-sr-uuid", "ha-config:"), flags=("--force",),
         changes=True),
    Verb("pool-ha-disable", "disarm HA on every host (VMs keep running)", OPERATE,
         changes=True),
    Verb("pool-key-rotate", "replace the pool key on every live host, both keys accepted for "
         "one step (no fence); hosts not answering must get the new pool.key by hand",
         OPERATE),
    Verb("pool-join", "run against a host waiting to join (-s HOST:PORT): it asks the master "
         "to admit it and starts as a member", OPERATE, ("master-address",),
         ("master-address",), local=True),
    Verb("pool-admit", "the master's half of pool-join: the lowest free HA index, the pool "
         "database and the SR's member table for a new host", OPERATE,
         ("address", "name-label", "memory", "uuid"), ("address", "name-label", "memory"),
         changes=True),
    Verb("pool-eject", "remove a host from the pool: its VMs moved off first (refused if they "
         "do not fit), it leaves cleanly, its slot is freed", OPERATE, ("host-uuid",),
         ("host-uuid",), changes=True),
    Verb("pool-ha-rebalance", "move protected and best-effort VMs back to the hosts the pool "
         "database records them on, one at a time (cold moves), never leaving the plan short; "
         "--dry-run lists the moves", OPERATE, flags=("--dry-run",), changes=True),
    Verb("pool-ha-compute-max-host-failures-to-tolerate",
         "how many host failures the current VMs survive", READ),
    Verb("host-list", "every host", READ, ("params", "uuid", "name-label")),
    Verb("host-param-get", "one host parameter", READ, ("uuid", "param-name"),
         ("uuid", "param-name")),
    Verb("host-disable", "take a host out of placement (HA will not restart VMs on it)",
         OPERATE, ("uuid",), ("uuid",), changes=True),
    Verb("host-enable", "put a host back into placement", OPERATE, ("uuid",), ("uuid",),
         changes=True),
    Verb("host-evacuate", "move every VM of a host to the others (it stays disabled)",
         OPERATE, ("uuid",), ("uuid",), changes=True),
    Verb("host-shutdown", "clean shutdown: the host disarms, marks itself excluded and stops",
         OPERATE, ("uuid",), ("uuid",), changes=True),
    Verb("vm-list", "every VM", READ, ("params", "uuid", "name-label", "ha-restart-priority",
                                       "power-state", "resident-on")),
    Verb("vm-param-get", "one VM parameter", READ, ("uuid", "param-name"),
         ("uuid", "param-name")),
    Verb("vm-param-set", "set VM parameters (removing protection keeps the order; "
         "protecting a halted VM while HA is on starts it: --force past the plan)", OPERATE,
         ("uuid", *VM_SETTABLE), ("uuid",), ("--force",), changes=True),
    Verb("vm-install", "add a halted VM running the pool's guest program (memory in MiB; "
         "devices=a,b for passthrough: best-effort at most); a protected one is started by "
         "HA at once (--force past the plan)", OPERATE,
         ("uuid", "memory", "devices", *VM_SETTABLE), ("name-label", "memory"), ("--force",),
         changes=True),
    Verb("vm-uninstall", "remove a halted or suspended VM from the pool", OPERATE, ("uuid",),
         ("uuid",), changes=True),
    Verb("vm-start", "start a halted VM on host= (uuid or name) or the plan's best fit; "
         "refused if it leaves the plan short, unless --force", OPERATE, ("uuid", "host"),
         ("uuid",), ("--force",), changes=True),
    Verb("vm-shutdown", "shut a VM down (a protected one: remove its protection first); "
         "it stays halted, through a master failover too", OPERATE, ("uuid",), ("uuid",),
         changes=True),
    Verb("vm-reboot", "stop a VM and start it again on its host", OPERATE, ("uuid",),
         ("uuid",), changes=True),
    Verb("vm-suspend", "stop a VM keeping its state on its disks; HA never starts it until "
         "vm-resume", OPERATE, ("uuid",), ("uuid",), changes=True),
    Verb("vm-resume", "start a suspended VM on host= or the plan's best fit; refused if it "
         "leaves the plan short, unless --force", OPERATE, ("uuid", "host"), ("uuid",),
         ("--force",), changes=True),
    Verb("vm-migrate", "move a running VM to host= (a cold move: process workloads cannot "
         "move live); refused if it leaves the plan short, unless --force", OPERATE,
         ("uuid", "host"), ("uuid", "host"), ("--force",), changes=True),
    Verb("diagnostic-vm-status", "can this VM be restarted elsewhere, and if not why", READ,
         ("uuid",), ("uuid",)),
    Verb("message-list", "the pool's alerts, oldest first", READ, ("name", "obj-uuid", "since")),
    Verb("pool-ha-margins", "every live host's measured margins (heartbeat gaps, slot I/O, "
         "loop lag) against their limits; timeout=T: against the limits of that T", READ,
         ("timeout",)),
    Verb("pool-ha-whatif", "predict, with the simulator on this pool's own hosts, VMs, "
         "placement and timing, what a fault does: fail=HOST[,HOST] crashes hosts, "
         "partition=A,B/C splits the network; who fences, the master after, when each VM runs "
         "again", READ, ("fail", "partition", "seed")),
    Verb("ha-explain", "why hosts were removed and VMs started where they did, oldest first: "
         "the views, the survival rule, the fence-window arithmetic, the plan's choice", READ,
         ("host", "since")),
    Verb("audit-list", "who changed what and when, oldest first (the newest kept)", READ,
         ("since", "credential", "verb")),
    Verb("credential-deny-list", "the credentials the pool refuses", READ),
    Verb("credential-deny", "refuse a credential (cert:SERIAL or secret:ROLE:NAME) from now on",
         OPERATE, ("credential",), ("credential",), changes=True),
    Verb("credential-allow", "take a credential off the deny list", EMERGENCY,
         ("credential",), ("credential",), changes=True),
    Verb("host-emergency-ha-disable", "on this host: disarm HA, stop it, mark it excluded",
         EMERGENCY, flags=("--force",), local=True),
    Verb("pool-emergency-transition-to-master", "make this host the master (HA off)", EMERGENCY,
         ("uuid",), local=True),
    Verb("pool-emergency-reset-master", "tell this host where the master is (HA off)", EMERGENCY,
         ("master-address",), ("master-address",), local=True),
)
VERBS: Mapping[str, Verb] = {verb.name: verb for verb in _TABLE}


@dataclass(frozen=True)
class Call:
    verb: str
    params: dict[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    caller: Credential | None = field(default=None, compare=False)  # set by the API server

    def message(self) -> dict[str, object]:
        """The request as sent; a relayed one names its caller."""
        message: dict[str, object] = {"verb": self.verb, "params": dict(self.params),
                                      "flags": list(self.flags)}
        if self.caller is not None:
            message["caller"] = self.caller.message()
        return message


def lookup(name: str) -> Verb:
    verb = VERBS.get(name)
    if verb is None:
        near = [v for v in VERBS if v.split("-")[0] == name.split("-")[0]] or sorted(VERBS)
        raise UsageError(f"unknown verb {name!r}; did you mean one of: {', '.join(near)}")
    return verb


def parse(words: Sequence[str]) -> Call:
    """``verb key=value ... --flag`` as typed on the command line."""
    if not words:
        raise UsageError("no verb given; try 'hactl help'")
    verb = lookup(words[0])
    params: dict[str, str] = {}
    flags: list[str] = []
    for word in words[1:]:
        if word.startswith("--"):
            flags.append(word)
            continue
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"{verb.name}: expected key=value, got {word!r} "
                             f"(write key= for an empty value)")
        if key in params:
            raise UsageError(f"{verb.name}: {key} given twice")
        params[key] = value
    return check(verb.name, params, flags)


def check(name: str, params: Mapping[str, object], flags: Sequence[object]) -> Call:
    """Validate a call's shape (the server runs this on every request)."""
    verb = lookup(name)
    for key, value in params.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError(f"{verb.name}: parameters are text key=value pairs")
        if not verb.accepts(key):
            accepted = ", ".join(p + ("KEY" if p.endswith(":") else "")
                                 for p in verb.params) or "none"
            raise UsageError(f"{verb.name}: unknown parameter {key!r}; accepted: {accepted}")
    for flag in flags:
        if flag not in verb.flags:
            raise UsageError(f"{verb.name}: unknown flag {flag!r}; accepted: "
                             f"{', '.join(verb.flags) or 'none'}")
    missing = [key for key in verb.required if key not in params]
    if missing:
        raise UsageError(f"{verb.name}: missing {', '.join(k + '=...' for k in missing)}")
    return Call(verb.name, {str(k): str(v) for k, v in params.items()},
                tuple(str(f) for f in flags))
