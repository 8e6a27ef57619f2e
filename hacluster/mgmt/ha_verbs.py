"""``pool-ha-enable`` and ``pool-ha-disable``: arming the pool, on the SR it chooses.

Rules:

* ``pool-ha-enable`` needs every host live (answering its agent). It checks
  the heartbeat SR on every host (:mod:`hacluster.mgmt.sr_check`: reachable,
  big enough, O_DIRECT, one volume shared by all), writes a fresh generation
  to it, records the enable, then arms every host (``ha-arm`` names the SR),
  reporting progress host by host. A setting it refuses changes nothing.
* ``heartbeat-sr-uuids=`` (one SR; ``heartbeat-sr-uuid=`` is the same)
  chooses the SR; without it the pool stays on the one it last used. Naming
  another SR moves the pool: after the check, the database moves first
  (snapshot and anchor on the new SR), then the master's lanes; if writing
  the generation or the record then fails, the new SR is marked INVALID and
  the database and lanes go back.
* **The SR lost.** A master that could not open the database on its SR
  (HA off: after ``pool-ha-disable`` in survival rule 2, say) answers
  ``pool-ha-enable`` naming another SR: every host must be live and disarmed;
  the database is opened on the new SR from the newest copy the hosts' backups
  hold, the disable that could not be recorded is recorded first, then the
  enable goes on as above. Naming the lost SR itself is refused, saying why.
* ``pool-ha-disable`` records the disable first (so a new master would not
  re-arm), marks the SR invalid, then disarms every host; VMs keep running.
  With the heartbeat SR lost everywhere (survival rule 2, no master) the host
  reached answers it: every host of its liveset disarms cleanly, with no
  database record (there is none to write).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from dataclasses import replace

from hacluster.core.pool import PoolError
from hacluster.core.pooldb import HASettings, PoolDB, apply
from hacluster.mgmt.handlers import Answer, Handlers
from hacluster.mgmt.sr_check import check_sr


class HAVerbs(Handlers):
    async def _pool_ha_enable(self, params: Mapping[str, str], flags: tuple[str, ...]) -> Answer:
        database = self.control.database
        lost = database is None  # the database did not open on its SR here (answered locally)
        db = self.control.newest_copy() if database is None else database.db
        if db.ha.enabled and not lost:
            raise PoolError("HA is already enabled; pool-ha-disable first to change its "
                            "settings")
        timeout = self._timeout(params, db)
        sr = self._heartbeat_sr(params, db)
        was = self.control.heartbeat_sr()
        if lost and sr == was:
            raise PoolError(f"this host could not open the pool database on heartbeat SR "
                            f"{was} ({self.control.database_error or 'unknown error'}): bring "
                            "that SR back, or name another with heartbeat-sr-uuids= to move "
                            "the pool there")
        hosts = [h.uuid for h in db.pool.hosts]
        yield {"progress": f"checking that all {len(hosts)} hosts are live"}
        answers = await self.control.ask_all({"op": "ping"}, hosts)
        down = [db.pool.host(h).name for h, a in answers.items() if isinstance(a, str)]
        if down:
            raise PoolError(f"every host must be live to enable HA; not answering: "
                            f"{', '.join(down)}")
        armed = [db.pool.host(h).name for h, a in answers.items()
                 if isinstance(a, dict) and a.get("armed")]
        if lost and armed:
            raise PoolError(f"HA still runs on {', '.join(armed)}: pool-ha-disable first")
        generation = random.getrandbits(62) | 1
        enable = {"op": "ha-enable", "timeout": timeout, "heartbeat_sr": sr,
                  "sr_generation": generation}
        # validate first, then write the SR, then record: a refusal changes nothing
        apply(replace(db, ha=HASettings()), enable)
        names = {h.uuid: h.name for h in db.pool.hosts}
        async for out in check_sr(self.control, sr, hosts, names, generation,
                                  "--force" in flags):
            yield out
        if sr != was:
            yield {"progress": f"moving the pool database from heartbeat SR {was} to {sr}"}
            await self.control.use_sr(sr)
        if lost and self._db().db.ha.enabled:
            yield {"progress": "recording the disable that could not be recorded without "
                               "the heartbeat SR"}
            await self._commit({"op": "ha-disable"})
        yield {"progress": f"writing a new generation to heartbeat SR {sr}"}
        try:
            await self.control.write_generation(generation, active=True)
            await self._commit(enable)
        except PoolError:
            if sr != was and not lost:  # back where the pool was: the new SR marked unused
                with contextlib.suppress(PoolError):
                    await self.control.write_generation(generation, active=False)
                await self.control.use_sr(was)
            raise
        yield {"progress": "arming every host"}
        armed_now = await self.control.ask_all(
            {"op": "ha-arm", "generation": generation, "timeout": timeout, "sr": sr}, hosts)
        for host, answer in armed_now.items():
            name = db.pool.host(host).name
            yield {"progress": f"{name}: " + (answer if isinstance(answer, str) else "armed")}
        yield self._done(f"HA enabled: generation {generation}, timeout {timeout:g} s")

    @staticmethod
    def _timeout(params: Mapping[str, str], db: PoolDB) -> float:
        text = params.get("ha-config:timeout", str(db.ha.timeout))
        extra = sorted(k for k in params if k.startswith("ha-config:") and k != "ha-config:timeout")
        if extra:
            raise PoolError(f"unknown HA setting(s) {extra}; known: ha-config:timeout")
        try:
            return float(text)
        except ValueError:
            raise PoolError(f"ha-config:timeout must be seconds, got {text!r}") from None

    @staticmethod
    def _heartbeat_sr(params: Mapping[str, str], db: PoolDB) -> str:
        """The SR ``heartbeat-sr-uuids=`` names (one), else the one the pool last used."""
        given = [params[name] for name in ("heartbeat-sr-uuids", "heartbeat-sr-uuid")
                 if params.get(name)]
        if len(given) > 1:
            raise PoolError("give the heartbeat SR once: heartbeat-sr-uuids=UUID")
        if not given:
            return db.ha.sr
        srs = [sr.strip() for sr in given[0].split(",")]
        if len(srs) != 1 or not srs[0]:
            raise PoolError(f"heartbeat-sr-uuids={given[0]!r}: a pool heartbeats on one SR; "
                            "name one")
        return srs[0]

    async def _pool_ha_disable(self, params: Mapping[str, str],
                               flags: tuple[str, ...]) -> Answer:
        if self.control.database is None and self.control.rule2():
            async for out in self._ha_disable_without_sr():
                yield out
            return
        db = (await self._commit({"op": "ha-disable"}))
        yield {"progress": "marking the heartbeat SR invalid"}
        await self.control.write_generation(db.ha.sr_generation, active=False)
        hosts = [h.uuid for h in db.pool.hosts]
        yield {"progress": "disarming every host"}
        answers = await self.control.ask_all({"op": "ha-disarm"}, hosts)
        for host, answer in answers.items():
            name = db.pool.host(host).name
            yield {"progress": f"{name}: " + (answer if isinstance(answer, str) else "disarmed")}
        yield self._done("HA disabled; VMs keep running")

    async def _ha_disable_without_sr(self) -> Answer:
        """Survival rule 2: no master, no SR, no database to record it. Every host of
        the liveset disarms cleanly (it announces itself excluded on the network, so
        the others drop it without a fence); VMs keep running."""
        live = sorted(self.control.live_hosts() or ())
        yield {"progress": f"the heartbeat SR is lost on every host (survival rule 2): "
                           f"disarming the {len(live)} hosts of the liveset"}
        answers = await self.control.ask_all({"op": "ha-disarm"}, live)
        failed = {host: answer for host, answer in answers.items() if isinstance(answer, str)}
        for host, answer in answers.items():
            yield {"progress": f"{host}: " + (answer if isinstance(answer, str) else "disarmed")}
        if failed:
            raise PoolError(f"{len(failed)} host(s) did not disarm: {', '.join(failed)}; "
                            "run host-emergency-ha-disable --force on each of them")
        yield self._done("HA disarmed on every host without the heartbeat SR; VMs keep "
                         "running. No database could record it: once the SR is back, run "
                         "pool-ha-disable again so a host that restarts stays disarmed")
