"""Alerts of a node: stored as pool messages by the master, and e-mailed.

Rules:

* The master's alert is stored as a pool message, then mailed when the
  pool's other-config has ``mail-destination`` and ``ssmtp-mailhub``. A
  mail failure is logged, never fatal; so is a store the database refuses
  or does not acknowledge (an I/O error after the redo log took it).
* A host's own alert raised when there may be no master (entering
  survival-rule-2 mode) is logged and mailed at once and kept until the next
  master collects it (:meth:`Alerts.hand_over`, :meth:`Alerts.collect`) into
  the database; it is not mailed twice.
* Each alert name has a priority (1 most urgent); others get 4.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from hacluster.core.pool import PoolError
from hacluster.core.pooldb import PoolDB
from hacluster.mgmt import mail
from hacluster.mgmt.database import Database
from hacluster.node.tasks import Log, Supervisor

ALERT_PRIORITY = {"ha_pool_overcommitted": 3, "ha_host_failed": 2,
                  "ha_protected_vm_restart_failed": 2, "ha_failures_exceed_tolerance": 1,
                  "ha_survival_rule_2": 1, "ha_pool_database_rolled_back": 1}

AskAll = Callable[[dict[str, Any], list[str]], Awaitable[dict[str, dict[str, Any] | str]]]


class Alerts:
    def __init__(self, log: Log, tasks: Supervisor, database: Callable[[], Database | None],
                 known: Callable[[], PoolDB], ask_all: AskAll) -> None:
        self.log = log
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
        self.tasks.spawn(self._mail(message), f"mail alert {name}")

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
            await self._mail(message)

    async def _mail(self, message: dict[str, Any]) -> None:
        database = self.database()
        db = database.db if database is not None else self.known()
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
