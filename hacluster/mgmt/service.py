"""What each management verb does, on the master or on the host reached.

Rules:

* Reading verbs answer from the master's pool database and what it knows of
  the hosts; changing verbs go through :meth:`Database.commit`, so they are
  durable before they are acknowledged and refused (nothing changed) when the
  pool database says so.
* ``pool-ha-enable`` and ``pool-ha-disable``: :mod:`hacluster.mgmt.ha_verbs`;
  the VM lifecycle: :mod:`hacluster.mgmt.vm_verbs`.
* ``host-evacuate`` first places every VM of the host on the other live,
  enabled hosts (best-fit decreasing, the restart planner's): if one does not
  fit or is not agile it is refused and nothing changes. Then the host is
  disabled and its VMs are moved one by one (stopped, then started on their
  target), restart priority and order first, each reported as progress.
* ``pool-admit`` (the master's half of ``pool-join``, which a host waiting to
  join runs: :mod:`hacluster.node.candidate`; a member refuses ``pool-join``)
  gives a new host the lowest free HA index of the generation:
  it records the host in the pool database, then writes the SR's member
  table (undoing the record if that write fails), and answers with what the
  host's configuration needs. ``pool-eject`` refuses the master itself, moves
  the host's VMs off as ``host-evacuate`` does (refused, nothing changed, if
  they do not fit), asks the host to leave cleanly and waits until no member
  lists it (refused if it does not leave within the leave timeout), then
  writes the member table without it, frees its slot and removes it from the
  database. Members read the table within t2 (:mod:`hacluster.node.roster`).
* The VM lifecycle verbs are :mod:`hacluster.mgmt.vm_verbs`; the helpers
  every handler shares, and the daemon's face (:class:`Control`), are
  :mod:`hacluster.mgmt.handlers`.
* ``host-shutdown`` is refused while the host runs a protected VM (unprotect
  it first): a clean shutdown announces the host excluded, so it is never
  treated as a failure.
* Every call of a verb above ``read-only`` that succeeds leaves an audit
  record in the pool database (:mod:`hacluster.core.pooldb`): the caller's
  credential id, role and name, the verb, its parameters with secrets
  redacted (:func:`redacted`) and its flags, and the time. The record rides
  on the call's first commit (same generation: never a change without its
  record); a verb that committed nothing (it acted on hosts) records it alone
  before its final answer, when this host holds the database. A refused call
  records nothing. ``audit-list`` reads the records.
* ``credential-deny`` / ``credential-allow`` change the deny list the API
  server checks on every call (ids checked by :mod:`hacluster.mgmt.roles`).
* ``pool-key-rotate`` (role operator: it changes no setting and discloses no
  key) rotates the pool key of the live hosts in three acknowledged steps
  (:mod:`hacluster.mgmt.keyrotation`).
* Emergency verbs act on the host reached and are refused while HA is armed
  there: ``host-emergency-ha-disable --force`` disarms it at once (excluded,
  not fenced); ``pool-emergency-transition-to-master`` makes it the master
  with HA off; ``pool-emergency-reset-master`` points it at another master.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from uuid import uuid4

from hacluster.core.planner import place_vms
from hacluster.core.pool import (
    PoolError,
    Priority,
    agility,
    diagnostic_vm_status,
    is_agile,
)
from hacluster.core.pooldb import PoolDB
from hacluster.core.recovery import (
    memory_by_priority,
    overcommitted,
    single_failures,
    tolerance,
)
from hacluster.core.timing import MAX_TIMEOUT, Timing, TimingError
from hacluster.mgmt import alert_hooks
from hacluster.mgmt.database import RolledBack
from hacluster.mgmt.ha_verbs import HAVerbs
from hacluster.mgmt.handlers import Answer, pending_audit
from hacluster.mgmt.keyrotation import rotate
from hacluster.mgmt.roles import CredentialError, Role, check_credential_id
from hacluster.mgmt.verbs import Call, lookup
from hacluster.mgmt.vm_verbs import VMVerbs
from hacluster.model import poolfile
from hacluster.storage.members import MembersError

PRIORITY = {"restart": 0, "best-effort": 1, "": 2}
REDACTED = "(redacted)"
SECRET_KEY = re.compile(r"secret|passw|token|auth|private", re.IGNORECASE)
SECRET_VALUE = re.compile(r"[0-9a-fA-F]{64}")  # a pool secret, a role secret's MAC
LEAVE_TIMEOUT = 60.0  # seconds pool-eject waits for a host to leave every liveset
STATUS_ALERTS = 10  # the newest alerts the status verb shows
STATUS_EVIDENCE = 12  # the newest evidence records (ha-explain) it shows
WHATIF_TIMEOUT = 120.0  # seconds a what-if simulation may take


class Service(VMVerbs, HAVerbs):
    async def answer(self, call: Call) -> Answer:
        handler = getattr(self, "_" + call.verb.replace("-", "_"))
        if lookup(call.verb).role is Role.READ_ONLY:
            async for out in handler(call.params, call.flags):
                yield out
            return
        pending_audit.set(self._audit_record(call))
        try:
            final: dict[str, Any] | None = None
            async for out in handler(call.params, call.flags):
                if "progress" in out:
                    yield out
                else:
                    final = out
            record = pending_audit.get()
            if record is not None and self.control.database is not None:
                await self.control.database.commit({"op": "audit", "audit": record})
        finally:
            pending_audit.set(None)
        if final is not None:
            yield final

    def _audit_record(self, call: Call) -> dict[str, Any]:
        caller = call.caller
        return {"time": self.clock(), "credential": caller.id if caller else "-",
                "role": caller.role.label if caller else "", "name": caller.name if caller
                else "", "verb": call.verb, "params": redacted(call.params),
                "flags": list(call.flags)}

    def _check_pool_uuid(self, params: Mapping[str, str]) -> None:
        db = self._db().db
        if "uuid" in params and params["uuid"] != pool_uuid(db):
            raise PoolError(f"no pool with uuid {params['uuid']}; this pool is {pool_uuid(db)}")

    # ------------------------------------------------------------ reading
    async def _status(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        db = self._db().db
        pool = self._pool
        live = self.control.live_hosts()
        tolerated, configured = tolerance(pool, live), pool.host_failures_to_tolerate
        hosts = [{"uuid": h.uuid, "name": h.name, "address": self.control.address(h.uuid),
                  "enabled": h.enabled,
                  "live": live is None or h.uuid in live, "master": h.uuid == db.master,
                  "vms": len(pool.resident_on(h.uuid)),
                  "memory": {"total": h.memory_total, "free": pool.free_memory(h.uuid)}}
                 for h in pool.hosts]
        vms = [{"uuid": vm.uuid, "name": vm.name, "priority": vm.priority.value,
                "order": vm.order, "power": vm.power.value, "host": vm.resident or ""}
               for vm in pool.vms]
        yield self._done({
            "pool": {"name": db.name, "uuid": pool_uuid(db), "master": db.master,
                     "ha_enabled": db.ha.enabled, "timeout": db.ha.timeout,
                     "tolerance": {"max": tolerated.max_failures,
                                   "exact": tolerated.exact,
                                   "configured": configured,
                                   "overcommitted": overcommitted(tolerated, configured)}},
            "hosts": hosts, "vms": vms, "memory_by_priority": memory_by_priority(pool),
            "failover": [{"host": scenario.failed[0], "moves": scenario.moves,
                          "verdict": scenario.verdict.value, "placement": scenario.placement}
                         for scenario in single_failures(pool, live)],
            "alerts": [{"time": m.time, "name": m.name, "obj": m.obj, "body": m.body}
                       for m in db.messages[-STATUS_ALERTS:]],
            "evidence": _newest_evidence(self.control.evidence())})

    def _pool_record(self) -> dict[str, Any]:
        db = self._db().db
        tolerated = tolerance(self._pool, self.control.live_hosts())
        return {"uuid": pool_uuid(db), "name-label": db.name, "master": db.master,
                "ha-enabled": db.ha.enabled,
                "ha-host-failures-to-tolerate": db.pool.host_failures_to_tolerate,
                "ha-plan-exists-for": tolerated.max_failures,
                "ha-allow-overcommit": db.pool.allow_overcommit,
                "ha-overcommitted": overcommitted(tolerated,
                                                  db.pool.host_failures_to_tolerate),
                "ha-reboot-vm-on-internal-shutdown": db.pool.reboot_vm_on_internal_shutdown,
                "ha-best-effort-attempts": db.pool.best_effort_attempts,
                "ha-configuration": {"timeout": db.ha.timeout},
                "ha-statefiles": [db.ha.heartbeat_sr] if db.ha.enabled else [],
                "other-config": dict(db.other_config), "generation": db.generation}

    def _host_records(self) -> list[dict[str, Any]]:
        pool = self._pool
        live = self.control.live_hosts()
        return [{"uuid": h.uuid, "name-label": h.name, "address": self.control.address(h.uuid),
                 "enabled": h.enabled, "live": live is None or h.uuid in live,
                 "memory-total": h.memory_total, "memory-free": pool.free_memory(h.uuid),
                 "resident-vms": [vm.uuid for vm in pool.resident_on(h.uuid)]}
                for h in pool.hosts]

    def _vm_records(self) -> list[dict[str, Any]]:
        return [{"uuid": vm.uuid, "name-label": vm.name,
                 "ha-restart-priority": vm.priority.value, "order": vm.order,
                 "start-delay": vm.start_delay, "ready": vm.ready,
                 "power-state": vm.power.value,
                 "resident-on": vm.resident or "", "memory-static-max": vm.memory}
                for vm in self._pool.vms]

    async def _pool_list(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        yield self._done([self._pool_record()])

    async def _host_list(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        yield self._done(_filtered(self._host_records(), params))

    async def _vm_list(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        yield self._done(_filtered(self._vm_records(), params))

    async def _pool_param_get(self, params: Mapping[str, str],
                              flags: tuple[str, ...]) -> Answer:
        self._check_pool_uuid(params)
        yield self._done(_param(self._pool_record(), params, "pool"))

    async def _host_param_get(self, params: Mapping[str, str],
                              flags: tuple[str, ...]) -> Answer:
        uuid = self._host_uuid(params)
        record = next(r for r in self._host_records() if r["uuid"] == uuid)
        yield self._done(_param(record, params, "host"))

    async def _vm_param_get(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        uuid = self._vm_uuid(params)
        record = next(r for r in self._vm_records() if r["uuid"] == uuid)
        yield self._done(_param(record, params, "VM"))

    async def _pool_ha_compute_max_host_failures_to_tolerate(
            self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        tolerated = tolerance(self._pool, self.control.live_hosts())
        yield self._done({"max": tolerated.max_failures, "exact": tolerated.exact,
                          "why": tolerated.why})

    async def _diagnostic_vm_status(self, params: Mapping[str, str],
                                    flags: tuple[str, ...]) -> Answer:
        yield self._done(diagnostic_vm_status(self._pool, self._vm_uuid(params)))

    async def _message_list(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        messages = [{"ref": m.ref, "name": m.name, "priority": m.priority, "obj": m.obj,
                     "body": m.body, "time": m.time}
                    for m in self._db().db.messages_since(_since(params, "message"))
                    if params.get("name", m.name) == m.name
                    and params.get("obj-uuid", m.obj) == m.obj]
        yield self._done(messages)

    async def _pool_ha_margins(self, params: Mapping[str, str],
                               flags: tuple[str, ...]) -> Answer:
        """Each live host's margins, worst first (its own timing, or that of timeout=T)."""
        request: dict[str, Any] = {"op": "margins"}
        if "timeout" in params:
            try:
                timeout = float(params["timeout"])
                if not 0 < timeout <= MAX_TIMEOUT:
                    raise ValueError(f"T must be in (0, {MAX_TIMEOUT:g}] seconds")
                request["timeout"] = Timing.derive(timeout).T
            except (TimingError, ValueError) as error:
                raise PoolError(f"timeout={params['timeout']!r}: {error}") from None
        pool = self._pool
        live = self.control.live_hosts()
        hosts = [h.uuid for h in pool.hosts if live is None or h.uuid in live]
        answers = await self.control.ask_all(request, hosts)
        names = {h.uuid: h.name for h in pool.hosts}
        yield self._done({"timeout": request.get("timeout"), "hosts": [
            {"host": names[uuid], **(answer if isinstance(answer, dict)
                                     else {"error": answer})}
            for uuid, answer in answers.items()]})

    async def _pool_ha_whatif(self, params: Mapping[str, str],
                              flags: tuple[str, ...]) -> Answer:
        """The simulator's prediction for a fault, on this pool as it is now (run in a
        process of its own at the lowest priority: it never slows this host's loops)."""
        db = self._db().db
        table = await self.control.member_table()
        order = {m.uuid: m.index for m in table.members}
        pool = self._pool
        hosts = tuple(sorted((h for h in pool.hosts if h.uuid in order),
                             key=lambda h: order[h.uuid]))
        data = poolfile.to_data(poolfile.PoolFile(replace(pool, hosts=hosts), name=db.name))
        seed = params.get("seed", "1")
        if not (seed.isascii() and seed.isdigit()) or len(seed) > 9:
            raise PoolError(f"seed must be a whole number, got {seed!r}")
        command = ["nice", "-n", "19", sys.executable, "-m", "hacluster", "simulate",
                   "--pool-json", "-", "--timeout", str(db.ha.timeout or 60.0),
                   "--mode", self.control.ha_mode(), "--seed", seed, "--json",
                   "--fail", params.get("fail", ""), "--partition", params.get("partition", "")]
        yield {"progress": "simulating (a few seconds)"}
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(WHATIF_TIMEOUT):
                out, err = await process.communicate(json.dumps(data).encode())
        except TimeoutError:
            process.kill()
            await process.wait()
            raise PoolError(f"the simulation did not end within {WHATIF_TIMEOUT:g} s") from None
        if process.returncode != 0:
            text = err.decode(errors="replace").strip().removeprefix("hacluster simulate: ")
            raise PoolError(text or f"the simulation failed (exit {process.returncode})")
        yield self._done(json.loads(out))

    async def _ha_explain(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        """The master's evidence records (host=NAME|UUID|INDEX, since=EPOCH SECONDS)."""
        book = self.control.evidence()
        names: dict[str, str] = book["names"]
        uuids: dict[str, str] = book["uuids"]
        since = _since(params, "time (epoch seconds)")
        records = [r for r in book["records"] if r["time"] >= since]
        if "host" in params:
            wanted = params["host"]
            index = next((i for i, n in names.items() if wanted in (n, i)), None)
            uuid = next((u for u, n in uuids.items() if wanted in (n, u)), None)
            if index is None and uuid is None:
                raise PoolError(f"no host {wanted!r} in the pool's member table")
            index = index if index is not None else next(
                (i for i, n in names.items() if n == uuids.get(uuid or "")), None)
            records = [r for r in records
                       if (r["kind"] == "commit" and index is not None
                           and int(index) in r["removed"])
                       or (r["kind"] == "restart" and uuid in (r["to"], r.get("was_on")))]
        yield self._done({"names": names, "uuids": uuids, "records": records})

    async def _audit_list(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        records = [{"ref": r.ref, "time": r.time, "credential": r.credential, "role": r.role,
                    "name": r.name, "verb": r.verb, "params": dict(r.params),
                    "flags": list(r.flags)}
                   for r in self._db().db.audit_since(_since(params, "audit record"))
                   if params.get("credential", r.credential) == r.credential
                   and params.get("verb", r.verb) == r.verb]
        yield self._done(records)

    async def _credential_deny_list(self, params: Mapping[str, str],
                                    flags: tuple[str, ...]) -> Answer:
        yield self._done([{"credential": ident} for ident in sorted(self._db().db.denied)])

    # ------------------------------------------------------------ changing
    async def _credential_deny(self, params: Mapping[str, str],
                               flags: tuple[str, ...]) -> Answer:
        credential = _credential_id(params)
        await self._commit({"op": "credential-deny", "credential": credential})
        yield self._done(f"{credential} is refused from now on")

    async def _credential_allow(self, params: Mapping[str, str],
                                flags: tuple[str, ...]) -> Answer:
        credential = _credential_id(params)
        await self._commit({"op": "credential-allow", "credential": credential})
        yield self._done(f"{credential} is no longer denied")

    async def _pool_param_set(self, params: Mapping[str, str],
                              flags: tuple[str, ...]) -> Answer:
        self._check_pool_uuid(params)
        fields = {k: v for k, v in params.items() if k != "uuid"}
        other = dict(self._db().db.other_config)
        for key, value in fields.items():
            if key.startswith("other-config:"):
                other[key.removeprefix("other-config:")] = value
        try:
            alert_hooks.check(other)
        except alert_hooks.HookError as error:
            raise PoolError(str(error)) from None
        await self._commit({"op": "pool-set", "fields": fields})
        yield self._done()

    async def _vm_param_set(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        fields = {k: v for k, v in params.items() if k != "uuid"}
        vm = self._pool.vm(self._vm_uuid(params))
        if self._protects_halted(vm, fields):
            self._plan_holds(vm, None, f"protecting halted VM {vm.name} (HA starts it at "
                             "once)", flags)
        await self._commit({"op": "vm-set", "vm": self._vm_uuid(params), "fields": fields})
        yield self._done()

    async def _host_disable(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        await self._commit({"op": "host-enabled", "host": self._host_uuid(params),
                            "enabled": False})
        yield self._done()

    async def _host_enable(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        await self._commit({"op": "host-enabled", "host": self._host_uuid(params),
                            "enabled": True})
        yield self._done()

    async def _host_shutdown(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        uuid = self._host_uuid(params)
        pool = self._pool
        protected = [vm.name for vm in pool.resident_on(uuid) if vm.priority is Priority.RESTART]
        if protected:
            raise PoolError(f"host {pool.host(uuid).name} runs protected VM(s) "
                            f"{', '.join(protected)}, which a shutdown would stop: remove "
                            "their protection first (vm-param-set uuid=... "
                            "ha-restart-priority=) and try again")
        answers = await self.control.ask_all({"op": "shutdown"}, [uuid])
        if isinstance(answers[uuid], str):
            raise PoolError(f"host {pool.host(uuid).name} did not answer: {answers[uuid]}")
        yield self._done(f"host {pool.host(uuid).name} is shutting down cleanly")

    async def _pool_join(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        raise PoolError(f"this host ({self.control.my_uuid()}) is a member of pool "
                        f"{self._db().db.name!r} already: pool-join is run against a host "
                        "waiting to join (its node.toml names its 'address'; docs/deploy.md)")
        yield {}  # pragma: no cover - an async generator, as every handler

    async def _pool_admit(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        addresses = tuple(a.strip() for a in params["address"].split(","))
        try:
            memory = int(params["memory"])
        except ValueError:
            raise PoolError(f"memory must be MiB, a whole number, got {params['memory']!r}") \
                from None
        name = params["name-label"]
        uuid = params.get("uuid") or str(uuid4())
        table = await self.control.member_table()
        try:
            joined = table.joined(uuid, name, addresses)
        except MembersError as error:
            raise PoolError(str(error)) from None
        host = {"uuid": uuid, "name": name, "memory": memory,
                "address": addresses[0].rpartition(":")[0].strip("[]")}
        await self._commit({"op": "host-join", "host": host})
        try:
            await self.control.write_members(joined, None)
        except (OSError, MembersError, PoolError) as error:
            await self._commit({"op": "host-eject", "host": uuid})
            raise PoolError(f"could not write the member table: {error}") from None
        member = joined.by_uuid(uuid)
        assert member is not None
        by_index = {m.index: list(m.addresses) for m in joined.members}
        yield self._done({"uuid": uuid, "index": member.index, "slots": joined.capacity,
                          "generation": joined.generation, "members_version": joined.version,
                          "hosts": [by_index.get(i, []) for i in range(joined.capacity)]})

    async def _pool_eject(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        uuid = self._db().db.pool.host(params["host-uuid"]).uuid
        name = self._pool.host(uuid).name
        if uuid == self.control.my_uuid():
            raise PoolError(f"host {name} is the master: it cannot eject itself; shut it down "
                            "(host-shutdown) so that another host takes over, then eject it")
        table = await self.control.member_table()
        member = table.by_uuid(uuid)
        try:
            ejected = table.ejected(uuid)
        except MembersError as error:
            raise PoolError(str(error)) from None
        assert member is not None
        if self._pool.resident_on(uuid):
            async for out in self._host_evacuate({"uuid": uuid}, flags):
                if "progress" in out:
                    yield out
        answers = await self.control.ask_all({"op": "shutdown"}, [uuid])
        if isinstance(answers[uuid], str) and self._live(uuid):
            raise PoolError(f"host {name} did not answer the request to leave: "
                            f"{answers[uuid]}")
        yield {"progress": f"{name} is leaving"}
        deadline = self.clock() + LEAVE_TIMEOUT
        while self._live(uuid):
            if self.clock() > deadline:
                raise PoolError(f"host {name} did not leave within {LEAVE_TIMEOUT:.0f} s; "
                                "it stays a member (try again, or shut it down first)")
            await asyncio.sleep(0.2)
        await self.control.write_members(ejected, member.index)
        recorded = self._db().db.pool
        now = {vm.uuid: vm.resident for vm in self._pool.vms if vm.resident is not None}
        moved = {vm.uuid: now.get(vm.uuid) for vm in recorded.resident_on(uuid)}
        await self._commit({"op": "host-eject", "host": uuid, "resident": moved})
        yield self._done(f"host {name} ejected: index {member.index} is free")

    def _live(self, uuid: str) -> bool:
        live = self.control.live_hosts()
        return live is not None and uuid in live

    async def _host_evacuate(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        uuid = self._host_uuid(params)
        pool = self._pool
        live = self.control.live_hosts()
        vms = sorted(pool.resident_on(uuid),
                     key=lambda vm: (PRIORITY[vm.priority.value], vm.order, vm.name))
        pinned = [f"{vm.name} ({'; '.join(map(str, agility(pool, vm)))})"
                  for vm in vms if not is_agile(pool, vm)]
        if pinned:
            raise PoolError(f"cannot evacuate {pool.host(uuid).name}: not agile: "
                            f"{', '.join(pinned)}")
        rooms = [(h.uuid, pool.free_memory(h.uuid)) for h in pool.hosts
                 if h.uuid != uuid and h.enabled and (live is None or h.uuid in live)]
        placement, unplaced = place_vms(pool, vms, rooms)
        if unplaced:
            names = ", ".join(pool.vm(item.vm).name for item in unplaced)
            raise PoolError(f"cannot evacuate {pool.host(uuid).name}: no room on the other "
                            f"live enabled hosts for {names}")
        await self._commit({"op": "host-enabled", "host": uuid, "enabled": False})
        yield {"progress": f"{pool.host(uuid).name} disabled; moving {len(vms)} VM(s)"}
        for vm in vms:
            target = placement[vm.uuid]
            await self.control.move(vm.uuid, uuid, target)
            yield {"progress": f"{vm.name}: {pool.host(uuid).name} -> "
                               f"{pool.host(target).name}"}
        yield self._done(f"{pool.host(uuid).name} evacuated: {len(vms)} VM(s) moved; it stays "
                         "disabled (host-enable uuid=... to use it again)")

    async def _pool_key_rotate(self, params: Mapping[str, str],
                               flags: tuple[str, ...]) -> Answer:
        async for out in rotate(self.control, self._db().db):
            yield out if "progress" in out else self._done(out["done"])

    # ------------------------------------------------------------ emergency (local)
    def _refuse_if_armed(self, verb: str) -> None:
        if self.control.armed():
            raise PoolError(f"{verb} is refused while HA is armed on this host; "
                            "run host-emergency-ha-disable --force here first")

    async def _host_emergency_ha_disable(self, params: Mapping[str, str],
                                         flags: tuple[str, ...]) -> Answer:
        if "--force" not in flags:
            raise PoolError("host-emergency-ha-disable needs --force: it disarms HA on this "
                            "host at once, without the pool's agreement")
        await self.control.emergency_disarm()
        yield self._done("HA disarmed on this host; it is excluded from the liveset")

    async def _pool_emergency_transition_to_master(self, params: Mapping[str, str],
                                                   flags: tuple[str, ...]) -> Answer:
        self._refuse_if_armed("pool-emergency-transition-to-master")
        try:
            database = await self.control.become_master()
        except RolledBack:
            raise
        except (PoolError, OSError, ValueError) as error:
            self.control.master_without_database(str(error))
            raise PoolError(f"could not open the pool database here: {error}. If its heartbeat "
                            "SR is lost for good, this host now answers pool-ha-enable "
                            "heartbeat-sr-uuids=UUID: it moves the pool, and its database from "
                            "the hosts' backups, to that SR") from None
        me = database.db.pool.hosts[self.control.index]
        if "uuid" in params and params["uuid"] != me.uuid:
            raise PoolError(f"uuid {params['uuid']} is not this host ({me.uuid})")
        if database.db.master != me.uuid:
            await self._commit({"op": "master", "host": me.uuid}, database)
        if database.db.ha.enabled:
            await self._commit({"op": "ha-disable"}, database)
            # hosts that restart find the SR invalid: they stay with HA off
            await self.control.write_generation(database.db.ha.sr_generation, active=False)
        yield self._done(f"{me.name} is now the master (HA off); re-enable HA with "
                         "pool-ha-enable once every host is back")

    async def _pool_emergency_reset_master(self, params: Mapping[str, str],
                                           flags: tuple[str, ...]) -> Answer:
        self._refuse_if_armed("pool-emergency-reset-master")
        yield self._done(self.control.reset_master(params["master-address"]))


def pool_uuid(db: PoolDB) -> str:
    return "pool-" + (db.pool.hosts[0].uuid if db.pool.hosts else "empty")


def redacted(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` for the audit: values of secret-looking keys, and values holding what
    looks like a secret, replaced by :data:`REDACTED`."""
    return {key: REDACTED if SECRET_KEY.search(key) or SECRET_VALUE.search(value) else value
            for key, value in params.items()}


def _newest_evidence(book: dict[str, Any]) -> dict[str, Any]:
    """The newest evidence records, with the names of the hosts they number."""
    return {"names": book["names"], "records": book["records"][-STATUS_EVIDENCE:]}


def _since(params: Mapping[str, str], what: str) -> int:
    since = params.get("since", "0")
    if not (since.isascii() and since.isdigit()) or len(since) > 18:
        raise PoolError(f"since must be a {what} number, got {since!r}")
    return int(since)


def _credential_id(params: Mapping[str, str]) -> str:
    try:
        return check_credential_id(params["credential"])
    except CredentialError as error:
        raise PoolError(str(error)) from None


def _filtered(records: list[dict[str, Any]], params: Mapping[str, str]) -> list[dict[str, Any]]:
    wanted = {k: v for k, v in params.items() if k != "params"}
    return [r for r in records if all(str(r.get(k)) == v for k, v in wanted.items())]


def _param(record: Mapping[str, Any], params: Mapping[str, str], kind: str) -> Any:
    name = params["param-name"]
    if name not in record:
        raise PoolError(f"{kind} has no parameter {name!r}; known: {sorted(record)}")
    value = record[name]
    key = params.get("param-key")
    if key is not None:
        if not isinstance(value, dict) or key not in value:
            raise PoolError(f"{kind} parameter {name} has no key {key!r}")
        value = value[key]
    return value
