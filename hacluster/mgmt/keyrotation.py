"""``pool-key-rotate`` on the master: a new pool key in three steps, with no false fence.

Rules:

* Every host holds a key ring (:class:`~hacluster.wire.keys.KeyRing`): it
  seals with its current key and opens with that key or one other. The
  master moves the live hosts (those that answer a ``ping``) through three
  steps, each acknowledged by every one of them over the authenticated host
  RPC (agent ops ``key-accept``, ``key-switch``, ``key-retire``,
  ``key-drop``) before the next begins, so that at every moment every frame a
  live host sends opens at every other:

  1. *accept*: a fresh key (``os.urandom(32)``) goes to every live host,
     inside an RPC frame sealed under the current key; each writes it 0600
     beside its ``pool.key`` and opens with it, sealing nothing with it. If any
     live host fails, every host is told to drop it and the verb fails:
     nothing changed.
  2. *switch*: every host seals with the new key, still opening with the old
     one, and saves its local backup again under the new key; the master also
     rewrites what it MACs on the SR (the global block, a fresh redo-log
     snapshot, the anchor) under the new key.
  3. *retire*: after the switch is acknowledged everywhere, plus the pool's
     timeout T (so every slot and heartbeat sealed with the old key has been
     superseded), every host drops the old key.

* A step that fails after the accept leaves every live host opening both
  keys (nothing fences); running the verb again finishes that rotation
  (switch and retire with the key the master holds) before starting anew.
* Hosts that did not answer keep the old key only: once it is retired they
  cannot rejoin until the operator copies the new ``pool.key`` to them. The
  verb's answer names them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

from hacluster.core.pool import PoolError
from hacluster.core.pooldb import PoolDB
from hacluster.wire.keys import KEY_BYTES, KeyRing

Answer = AsyncIterator[dict[str, Any]]


class KeyControl(Protocol):
    """What a rotation needs of the master's daemon."""

    def key_ring(self) -> KeyRing: ...
    async def ask_all(self, request: dict[str, Any],
                      hosts: list[str]) -> dict[str, dict[str, Any] | str]: ...


def _failed(answers: dict[str, dict[str, Any] | str], db: PoolDB) -> list[str]:
    return [f"{db.pool.host(h).name} ({a})" for h, a in answers.items() if isinstance(a, str)]


async def _step(control: KeyControl, db: PoolDB, op: str, key: bytes,
                hosts: list[str]) -> list[str]:
    """Ask every host of ``hosts`` to take step ``op`` with ``key``; those that failed."""
    return _failed(await control.ask_all({"op": op, "key": key}, hosts), db)


async def _switch_and_retire(control: KeyControl, db: PoolDB, key: bytes, live: list[str],
                             wait: float) -> Answer:
    failed = await _step(control, db, "key-switch", key, live)
    if failed:
        raise PoolError(f"key switch not acknowledged by {', '.join(failed)}: every live host "
                        "still opens both keys (nothing fences); run pool-key-rotate again "
                        "to finish this rotation")
    yield {"progress": f"switch: {len(live)} host(s) seal with the new key; the SR and the "
                       f"backups are rewritten under it; waiting {wait:g} s (T) before "
                       "retiring the old key"}
    await asyncio.sleep(wait)
    failed = await _step(control, db, "key-retire", key, live)
    if failed:
        raise PoolError(f"old key not retired on {', '.join(failed)} (they still accept it); "
                        "run pool-key-rotate again to finish this rotation")
    yield {"progress": f"retire: {len(live)} host(s) dropped the old key"}


async def rotate(control: KeyControl, db: PoolDB) -> Answer:
    """Rotate the pool key on every live host: progress, then the final text."""
    hosts = [h.uuid for h in db.pool.hosts]
    wait = db.ha.timeout if db.ha.enabled else 0.0
    pinged = await control.ask_all({"op": "ping"}, hosts)
    live = [h for h in hosts if not isinstance(pinged[h], str)]
    down = [db.pool.host(h).name for h in hosts if isinstance(pinged[h], str)]
    ring = control.key_ring()
    if ring.other is not None:
        unfinished = ring.next if ring.next is not None else ring.current
        yield {"progress": "finishing the rotation left unfinished before a new one"}
        async for step in _switch_and_retire(control, db, unfinished, live, wait):
            yield step
    new = os.urandom(KEY_BYTES)
    failed = await _step(control, db, "key-accept", new, live)
    if failed:
        await _step(control, db, "key-drop", new, live)
        raise PoolError(f"key rotation refused, nothing changed: {', '.join(failed)} could "
                        "not accept the new key (every host was told to drop it)")
    yield {"progress": f"accept: {len(live)} host(s) hold the new key (0600) and open with it"}
    async for step in _switch_and_retire(control, db, new, live, wait):
        yield step
    text = f"pool key rotated on {len(live)} host(s)"
    if down:
        text += (f"; NOT on {', '.join(down)} (not answering): they keep the old key and "
                 "cannot rejoin until the new pool.key is copied to them (0600) from a host "
                 "that took part (docs/operations.md)")
    yield {"done": text}
