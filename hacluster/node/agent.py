"""The host agent: the master's handle on one host's VMs, over authenticated RPC.

Rules:

* Requests are maps with an ``op``:

  - ``{"op": "list", "since": n}`` -> ``{"ok": True, "running": {uuid: pid},
    "exits": [{"seq", "vm", "kind", "returncode"}, ...], "last_seq": m}`` with
    the exits still kept whose ``seq`` is above ``n``;
  - ``{"op": "start", "vm": uuid, "command": [...], "env": {...},
    "ready_file": path, "ready_command": [...]}`` (process driver; ``env``,
    ``ready_file`` and ``ready_command`` optional: with either readiness the
    answer waits until the VM is ready) or ``{"op":
    "start", "vm": uuid, "memory": MiB}`` (sim driver) -> ``{"ok": True, "pid": n}``;
  - ``{"op": "stop", "vm": uuid}`` -> ``{"ok": True, "kind", "returncode"}``.

* It serves over :mod:`hacluster.wire.rpc`, bound to this host of this pool:
  a request meant for another host (a proxy forwarding it) does not open here.
* Everything is checked before anything is done: an unknown op, or a field
  missing or of the wrong type, is answered ``{"ok": False, "error": ...}``
  naming it, and changes nothing. So is a request the driver refuses.
"""

from __future__ import annotations

from typing import Any

from hacluster.vm.driver import DriverError, ProcessDriver, SimDriver, VMExit
from hacluster.wire import rpc
from hacluster.wire.listener import Listener

TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a map"}


class BadRequest(ValueError):
    """A request that is not well formed; nothing was done."""


def _field(request: dict[str, Any], name: str, kind: type) -> Any:
    if name not in request:
        raise BadRequest(f"missing field {name!r}")
    value = request[name]
    if type(value) is not kind:
        raise BadRequest(f"field {name!r} must be {TYPE_NAMES[kind]}, "
                         f"not {type(value).__name__}")
    return value


def _strings(value: list[Any] | dict[Any, Any], name: str) -> None:
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    if not all(isinstance(item, str) for item in items):
        raise BadRequest(f"field {name!r} must hold only strings")


def exit_fields(vm_exit: VMExit) -> dict[str, Any]:
    return {"seq": vm_exit.seq, "vm": vm_exit.vm, "kind": vm_exit.kind.value,
            "returncode": vm_exit.returncode}


class Agent:
    """Answers the master's requests by driving this host's VM driver."""

    def __init__(self, driver: ProcessDriver | SimDriver) -> None:
        self.driver = driver
        self.stats = rpc.RpcStats()

    async def serve(self, host: str, port: int, key: bytes, target: bytes) -> Listener:
        """Listen for authenticated requests meant for ``target`` (:func:`rpc.target`);
        bad ones are counted in :attr:`stats`."""
        return await rpc.serve(host, port, key, self.handle, self.stats, target=target)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            op = _field(request, "op", str)
            if op == "list":
                return self._list(_field(request, "since", int))
            if op == "start":
                return {"ok": True, "pid": await self._start(request)}
            if op == "stop":
                return {"ok": True, **await self._stop(_field(request, "vm", str))}
            raise BadRequest(f"unknown op {op!r} (list, start or stop)")
        except (BadRequest, DriverError) as error:
            return {"ok": False, "error": str(error)}

    def _list(self, since: int) -> dict[str, Any]:
        return {"ok": True, "running": self.driver.running(),
                "exits": [exit_fields(e) for e in self.driver.exits_since(since)],
                "last_seq": self.driver.last_seq}

    async def _start(self, request: dict[str, Any]) -> int:
        vm = _field(request, "vm", str)
        if isinstance(self.driver, SimDriver):
            return self.driver.start(vm, _field(request, "memory", int))
        command = _field(request, "command", list)
        _strings(command, "command")
        env = _field(request, "env", dict) if "env" in request else None
        if env is not None:
            _strings(env, "env")
        ready = _field(request, "ready_file", str) if "ready_file" in request else None
        check = _field(request, "ready_command", list) if "ready_command" in request else None
        if check is not None:
            _strings(check, "ready_command")
        return await self.driver.start(vm, command, env, ready, ready_command=check)

    async def _stop(self, vm: str) -> dict[str, Any]:
        if isinstance(self.driver, SimDriver):
            stopped = self.driver.stop(vm)
        else:
            stopped = await self.driver.stop(vm)
        return {"kind": stopped.kind.value, "returncode": stopped.returncode}
