"""The pool database as plain data: what a snapshot in the redo log or a backup holds.

Rules: :func:`from_data` reads exactly what :func:`to_data` writes, checking
every field (the pool part with the pool file's checks), and refuses anything
else with :class:`~hacluster.core.pool.PoolError`; a snapshot made before
the audit and the deny list existed reads as having neither. A database seeded from a
pool file starts at generation 1 with the first host as master and the file's pool
name.
"""

from __future__ import annotations

from typing import Any

from hacluster.core.pool import PoolError
from hacluster.core.pooldb import AuditRecord, HASettings, Message, PoolDB
from hacluster.model import poolfile
from hacluster.model.poolfile import PoolFile


def seed(pool_file: PoolFile) -> PoolDB:
    pool = pool_file.pool
    return PoolDB(1, pool, {k: tuple(v) for k, v in pool_file.commands.items()}, pool_file.name,
                  pool.hosts[0].uuid if pool.hosts else "",
                  ready_commands={k: tuple(v) for k, v in pool_file.ready_commands.items()})


def to_data(db: PoolDB) -> dict[str, Any]:
    return {
        "generation": db.generation,
        "pool": poolfile.to_data(PoolFile(
            db.pool, {k: list(v) for k, v in db.commands.items()},
            ready_commands={k: list(v) for k, v in db.ready_commands.items()})),
        "name": db.name,
        "master": db.master,
        "ha": [db.ha.enabled, db.ha.timeout, db.ha.heartbeat_sr, db.ha.sr_generation],
        "other_config": dict(db.other_config),
        "messages": [[m.ref, m.name, m.priority, m.obj, m.body, m.time] for m in db.messages],
        "audit": [[r.ref, r.time, r.credential, r.role, r.name, r.verb,
                   [list(p) for p in r.params], list(r.flags)] for r in db.audit],
        "denied": sorted(db.denied),
    }


def from_data(data: Any) -> PoolDB:
    try:
        pool_file = poolfile.parse(data["pool"], "database")
        enabled, timeout, sr, sr_generation = data["ha"]
        db = PoolDB(
            int(data["generation"]), pool_file.pool,
            {k: tuple(v) for k, v in pool_file.commands.items()}, str(data["name"]),
            str(data["master"]),
            HASettings(bool(enabled), float(timeout), str(sr), int(sr_generation)),
            {str(k): str(v) for k, v in data["other_config"].items()},
            tuple(Message(int(r), str(n), int(p), str(o), str(b), float(t))
                  for r, n, p, o, b, t in data["messages"]),
            tuple(AuditRecord(int(r), float(t), str(c), str(role), str(n), str(v),
                              tuple((str(k), str(value)) for k, value in params),
                              tuple(str(f) for f in flags))
                  for r, t, c, role, n, v, params, flags in data.get("audit", [])),
            frozenset(str(c) for c in data.get("denied", [])),
            {k: tuple(v) for k, v in pool_file.ready_commands.items()})
    except PoolError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise PoolError(f"database: malformed snapshot ({type(error).__name__}: {error})") \
            from None
    return db
