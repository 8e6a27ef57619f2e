"""Alerts of a node: stored as pool messages by the master, mailed, and handed to hooks.

Rules:

* The master's alert is stored as a pool message, then delivered: mailed
  when the pool's other-config has ``mail-destination`` and
  ``ssmtp-mailhub``, given to ``alert-script`` (run from this host's
  ``alert_dir``) and POSTed to ``alert-webhook``
  (:mod:`hacluster.mgmt.alert_hooks`), each when set. A delivery failure is
  logged, never fatal; so is a store the database refuses or does not
  acknowledge (an I/O error after the redo log took it).
* A host's own alert raised when there may be no master (entering
  survival-rule-2 mode) is logged and mailed at once and kept until the next
  master collects it (:meth:`Alerts.hand_over`, :meth:`Alerts.collect`) into
  the database; it is not mailed twice.
* Each alert name has a priority (1 most urgent); others get 4.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hacluster.core.pool import PoolError
from hacluster.core.pooldb import PoolDB
from hacluster.mgmt import alert_hooks, mail
from hacluster.mgmt.database import Database
from hacluster.node.tasks import Log, Supervisor

ALERT_PRIORITY = {"ha_pool_overcommitted": 3, "ha_host_failed": 2,
                  "ha_protected_vm_restart_failed": 2, "ha_failures_exceed_tolerance": 1,
                  "ha_survival_rule_2": 1, "ha_pool_database_rolled_back": 1}

AskAll = Callable[[dict[str, Any], list[str]], Awaitable[dict[str, dict[str, Any] | str]]]


class Alerts:
    def __init__(self, log: Log, tasks: Supervisor, database: Callable[[], Database | None],
                 known: Callable[[], PoolDB], ask_all: AskAll,
                 alert_dir: Path | None = None) -> None:
        self.log = log
        self.alert_dir = alert_dir
        self.tasks = tasks
        self.database = database  # the database, while this host is master
        self.known = known  # the newest copy seen here
        self.ask_all = ask_all
        self.pending: list[dict[str, Any]] = []  # raised here without a master

    def alert(self, name: str, obj: str, body: str) -> None:
        """An alert of the master: stored as a pool message, then mailed."""
        message = self._message(name, obj, body)
        self.tasks.spawn(self._store(message, mail_it=True), f"store alert {name}")

    def local_alert(self, name: str, obj: str, body: str) -> None:
        """An alert of this host, raised when there may be no master (survival rule 2;
        a master is losing its lock and the SR): mailed at once, kept until the
        next master collects it into the database."""
        message = self._message(name, obj, body)
        self.log("alert", name=name, obj=obj, body=body, stored="when a master is back")
        self.pending.append(message)
        self.tasks.spawn(self._deliver(message), f"deliver alert {name}")

    def hand_over(self) -> list[dict[str, Any]]:
        """The alerts kept here, for the master that collects them (given once)."""
        alerts, self.pending = self.pending, []
        return alerts

    async def collect(self, hosts: list[str]) -> None:
        """Store the alerts ``hosts`` raised while there was no master."""
        answers = await self.ask_all({"op": "pending-alerts"}, hosts)
        for answer in answers.values():
            if isinstance(answer, dict):
                for message in answer.get("alerts", []):
                    await self._store(dict(message), mail_it=False)  # mailed when raised

    @staticmethod
    def _message(name: str, obj: str, body: str) -> dict[str, Any]:
        return {"op": "message", "name": name, "priority": ALERT_PRIORITY.get(name, 4),
                "obj": obj, "body": body, "time": round(time.time(), 3)}

    async def _store(self, message: dict[str, Any], mail_it: bool) -> None:
        database = self.database()
        if database is None:
            return
        try:
            await database.commit(message)
        except (PoolError, OSError) as error:
            # an OSError may come after the redo log took it (the local backup
            # failed): stored, not acknowledged; a PoolError refused it
            self.log("alert", error=f"not acknowledged as stored: {error}",
                     name=message["name"])
        if mail_it:
            await self._deliver(message)

    def _db(self) -> PoolDB:
        database = self.database()
        return database.db if database is not None else self.known()

    async def _deliver(self, message: dict[str, Any]) -> None:
        """Mail, script and webhook, together; each failure logged."""
        await asyncio.gather(self._mail(message), self._hooks(message))

    async def _hooks(self, message: dict[str, Any]) -> None:
        db = self._db()
        try:
            hooks = alert_hooks.check(db.other_config)
        except alert_hooks.HookError as error:
            self.log("alert-hook", error=str(error), name=message["name"])
            return
        body = alert_hooks.payload(message, db.name)
        jobs = []
        if hooks.script is not None:
            jobs.append(self._hook("alert-script", alert_hooks.run_script(
                self.alert_dir, hooks.script, body), message))
        if hooks.webhook is not None:
            jobs.append(self._hook("alert-webhook", alert_hooks.post_webhook(
                hooks.webhook, body, hooks.webhook_ca), message))
        await asyncio.gather(*jobs)

    async def _hook(self, kind: str, delivery: Awaitable[object],
                    message: dict[str, Any]) -> None:
        try:
            self.log(kind, name=message["name"], result=str(await delivery))
        except alert_hooks.HookError as error:
            self.log(kind, name=message["name"], error=str(error))

    async def _mail(self, message: dict[str, Any]) -> None:
        db = self._db()
        try:
            config = mail.MailConfig.from_other_config(db.other_config)
            self.log("alert-mail", name=message["name"],
                     to=list(config.destination) if config else "not configured")
            if config is not None:
                await mail.send(config, mail.render(
                    {**message, "object": message["obj"], "timestamp": message["time"]},
                    db.name))
        except (mail.MailError, OSError) as error:
            self.log("alert-mail", error=str(error), name=message["name"])
