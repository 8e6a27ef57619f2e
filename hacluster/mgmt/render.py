"""hactl's text output: each verb's result as an operator reads it, xe style.

Rules:

* Pure functions of the result, no I/O: :func:`render` returns the text to
  print, ``""`` for nothing (a ``None`` result, an empty list).
* ``*-list`` verbs: one block per record, a blank line between blocks. The
  record's identity (``uuid``, else ``ref``) comes first, left-aligned, then
  the other keys in the server's order, right-aligned so every colon lines
  up. Keys that ``*-param-set`` of that object accepts are ``RW``, the others
  ``RO``. Message times print as UTC ISO 8601.
* A value prints bare; a map as ``key: value; key: value``, a list as
  ``a; b``, a boolean as ``true``/``false``, nothing as an empty value.
* ``pool-ha-compute-max-host-failures-to-tolerate`` prints the number (like
  xe) and, when it is only a proven lower bound, why on a second line.
* ``status`` prints the pool line, the failures tolerated, a host table
  (memory in MiB, split by restart priority) and the VMs grouped by restart
  priority (restart, best-effort, unprotected), each by order then name.
* An answer without the expected shape raises ``KeyError``, ``TypeError`` or
  ``ValueError``; the caller reports it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hacluster.core.pool import Priority
from hacluster.mgmt.verbs import POOL_SETTABLE, VM_SETTABLE
from hacluster.mgmt.whatif import render as whatif_text

IDENTITY_KEYS = ("uuid", "ref")
SETTABLE: Mapping[str, Sequence[str]] = {"pool": POOL_SETTABLE, "vm": VM_SETTABLE}
GAP = "  "


def render(verb: str, result: Any) -> str:
    """The text ``hactl`` prints for ``verb``'s ``result``."""
    special = _SPECIAL.get(verb)
    if special is not None:
        return special(result)
    if verb.endswith("-list"):
        return records(result, SETTABLE.get(verb.split("-")[0], ()))
    return "" if result is None else value_text(result)


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return "; ".join(f"{key}: {value_text(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(value_text(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------- records


def records(items: Iterable[Mapping[str, Any]], settable: Sequence[str]) -> str:
    return "\n\n".join(record(item, settable) for item in items)


def record(item: Mapping[str, Any], settable: Sequence[str]) -> str:
    keys = sorted(item, key=_identity_first)
    labels = [f"{key} ({' RW' if _settable(key, settable) else ' RO'})" for key in keys]
    width = max(map(len, labels), default=0)
    return "\n".join(
        f"{_align(label, width, key in IDENTITY_KEYS and index == 0)}: {value_text(item[key])}"
        for index, (key, label) in enumerate(zip(keys, labels, strict=True)))


def _identity_first(key: str) -> int:
    return IDENTITY_KEYS.index(key) if key in IDENTITY_KEYS else len(IDENTITY_KEYS)


def _settable(key: str, settable: Sequence[str]) -> bool:
    return key in settable or f"{key}:" in settable


def _align(label: str, width: int, left: bool) -> str:
    return label.ljust(width) if left else label.rjust(width)


def messages(items: Iterable[Mapping[str, Any]]) -> str:
    return records(({**item, "time": utc_iso(item["time"])} if "time" in item else item
                    for item in items), ())


def utc_iso(value: Any) -> str:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SSZ``; anything else as it came."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        when = datetime.datetime.fromtimestamp(value, datetime.UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value_text(value)


# ---------------------------------------------------------------- other shapes


def max_failures(result: Mapping[str, Any]) -> str:
    text = value_text(result["max"])
    if not result["exact"]:
        text += f"\n(a proven lower bound: {result['why']})"
    return text


def lines(result: Iterable[Any]) -> str:
    return "\n".join(value_text(line) for line in result)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as text lines, every column left-aligned to its widest cell."""
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    return [GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


# ---------------------------------------------------------------- status


def status(result: Mapping[str, Any]) -> str:
    pool, hosts = result["pool"], result["hosts"]
    names = {host["uuid"]: host["name"] for host in hosts}
    return "\n".join([
        _pool_line(pool, names),
        _tolerance_line(pool["tolerance"]),
        "",
        "hosts (memory in MiB):",
        *_indent(_host_table(hosts, result["memory_by_priority"])),
        "",
        *_vm_groups(result["vms"], names),
    ])


def _pool_line(pool: Mapping[str, Any], names: Mapping[str, str]) -> str:
    ha = f"HA on (timeout {value_text(pool['timeout'])} s)" if pool["ha_enabled"] else "HA off"
    master = _host_name(pool["master"], names) if pool["master"] else "none known"
    return f"pool {pool['name']}: {ha}, master {master}"


def _tolerance_line(tolerance: Mapping[str, Any]) -> str:
    kind = "exact" if tolerance["exact"] else "bound"
    line = f"failures tolerated: {tolerance['max']} ({kind}) of {tolerance['configured']} " \
           "configured"
    return line + (" OVERCOMMITTED" if tolerance["overcommitted"] else "")


def _host_table(hosts: Iterable[Mapping[str, Any]],
                by_priority: Mapping[str, Mapping[str, Any]]) -> list[str]:
    header = ["HOST", "ADDRESS", "STATE", "PLACEMENT", "ROLE", "VMS", "FREE/TOTAL",
              *(priority.label.upper() for priority in Priority)]
    return table([header, *(_host_row(host, by_priority.get(host["uuid"], {}))
                            for host in hosts)])


def _host_row(host: Mapping[str, Any], memory_by_priority: Mapping[str, Any]) -> list[str]:
    memory = host["memory"]
    return [host["name"], host["address"], "live" if host["live"] else "DOWN",
            "enabled" if host["enabled"] else "disabled", "master" if host["master"] else "",
            value_text(host["vms"]), f"{value_text(memory['free'])}/{value_text(memory['total'])}",
            *(value_text(memory_by_priority.get(priority.value, 0)) for priority in Priority)]


def _vm_groups(vms: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> list[str]:
    groups = _by_priority(vms)
    rows = iter(table([_vm_row(vm, names) for _, members in groups for vm in members]))
    text: list[str] = []
    for label, members in groups:
        text.append(f"{label} ({_count(len(members), 'VM')}):" if members else f"{label}: no VMs")
        text.extend(_indent(next(rows) for _ in members))
    return text


def _by_priority(vms: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    known = [priority.value for priority in Priority]
    values = known + sorted({_priority(vm) for vm in vms} - set(known))
    labels = {priority.value: priority.label for priority in Priority}
    return [(labels.get(value, value), sorted((vm for vm in vms if _priority(vm) == value),
                                              key=_vm_order)) for value in values]


def _priority(vm: Mapping[str, Any]) -> str:
    return str(vm["priority"] or "")


def _vm_order(vm: Mapping[str, Any]) -> tuple[int, str]:
    return int(vm["order"]), str(vm["name"])


def _vm_row(vm: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    host = _host_name(vm["host"], names) if vm["host"] else "-"
    return [str(vm["name"]), f"order {vm['order']}", str(vm["power"]), host]


def _host_name(uuid: str, names: Mapping[str, str]) -> str:
    return names.get(uuid, uuid)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _indent(text: Iterable[str]) -> list[str]:
    return [f"{GAP}{line}" for line in text]


# ---------------------------------------------------------------- ha-explain


def explain(result: Mapping[str, Any]) -> str:
    """The master's evidence records, each readable on its own."""
    names, uuids = result["names"], result["uuids"]
    blocks = [_commit_text(r, names) if r["kind"] == "commit" else _restart_text(r, uuids)
              for r in result["records"]]
    if not blocks:
        return "no evidence recorded (no removal or restart since this master took office)"
    return "\n\n".join(blocks)


def _clock(value: float | None) -> str:
    if value is None:
        return "never"
    when = datetime.datetime.fromtimestamp(value, datetime.UTC)
    return when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def _hosts(indices: Iterable[int], names: Mapping[str, str]) -> str:
    return "[" + ", ".join(names.get(str(i), f"#{i}") for i in indices) + "]"


def _commit_text(r: Mapping[str, Any], names: Mapping[str, str]) -> str:
    lines = [f"{utc_iso(r['time'])}  liveset {_hosts(r['liveset_before'], names)} -> "
             f"{_hosts(r['liveset'], names)}: removed {_hosts(r['removed'], names)}",
             f"{GAP}rule: {r['rule']} (decided {_clock(r['decided'])}, committed "
             f"{_clock(r['time'])})",
             f"{GAP}views the rule read:"]
    for view in r["views"]:
        access = "SR ok" if view["statefile_access"] else "no SR"
        lines.append(f"{GAP}{GAP}{names.get(str(view['host']), view['host'])}: network "
                     f"{_hosts(view['hbdomain'], names)}, statefile "
                     f"{_hosts(view['sfdomain'], names)} ({access})")
    for gone in r["removals"]:
        who = names.get(str(gone["host"]), gone["host"])
        if gone["proof"] == "fence report":
            proof = "its own fence report (last words) proves it fenced"
        elif gone["proof"] == "unseen":
            seen_by = gone["seen_by"]
            by = "this host" if seen_by is None else names.get(str(seen_by), seen_by)
            proof = (f"last seen {_clock(gone['last_seen'])} by {by}; unseen "
                     f"{gone['unseen_for']:.2f} s >= window {gone['window']:.2f} s: its lease "
                     "had run out, so it had fenced")
        else:
            proof = gone["proof"]
        lines.append(f"{GAP}{who}: {proof}")
    return "\n".join(lines)


def _restart_text(r: Mapping[str, Any], uuids: Mapping[str, str]) -> str:
    vm = r.get("name", r["vm"])
    what = f"{r.get('priority', '?')}, order {r.get('order', '?')}, {r.get('memory', '?')} MiB"
    was = f", was on {uuids.get(r['was_on'], r['was_on'])}" if r.get("was_on") else ""
    return (f"{utc_iso(r['time'])}  start {vm} ({what}) on {uuids.get(r['to'], r['to'])}"
            f"{was}\n{GAP}why there: {r['why']}")


# ---------------------------------------------------------------- pool-ha-margins


def margins(result: Mapping[str, Any]) -> str:
    """Per host, its margins worst first: p99 and worst beside the limit."""
    proposed = result.get("timeout")
    lines = [f"margins against the limits of T = {value_text(proposed)} s (proposed)"
             if proposed is not None else "margins against each host's running limits"]
    for host in result["hosts"]:
        if "error" in host:
            lines.append(f"{host['host']}: no answer ({host['error']})")
            continue
        low = [row for row in host["rows"] if row["low"]]
        verdict = f"{len(low)} LOW" if low else "all fine"
        lines.append(f"{host['host']} ({host.get('phase')}, T = {value_text(host['timeout'])} s):"
                     f" {verdict}")
        rows = [["", "p99", "worst", "limit", "used"]] + [
            [row["what"], _seconds(row["p99"]), _seconds(row["worst"]),
             f"{_seconds(row['limit'])} ({row['limit_name']})",
             f"{row['used'] * 100:.0f}%" + (" LOW" if row["low"] else "")]
            for row in host["rows"]]
        lines.extend(_indent(table(rows)))
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


_SPECIAL: Mapping[str, Callable[[Any], str]] = {
    "pool-ha-whatif": whatif_text,
    "pool-ha-margins": margins,
    "status": status,
    "ha-explain": explain,
    "message-list": messages,
    "diagnostic-vm-status": lines,
    "pool-ha-compute-max-host-failures-to-tolerate": max_failures,
}
