"""``pool-ha-enable``: checking the heartbeat SR (the one in use, or one to move to).

Rules (the seed's requirements for a heartbeat SR, checked at every enable
before anything of the pool changes):

* Every host of the pool (all are live: enable asks that first) answers
  ``sr-probe`` for the SR (:func:`~hacluster.node.heartbeat_sr.describe`):
  its ``node.toml`` maps a path for it, the volume there opens for reading
  and writing, holds at least :data:`~hacluster.storage.volume.MIN_SIZE`
  bytes, and takes O_DIRECT wherever the SR in use does (a host must read
  what the others wrote, not its page cache).
* The volume must be empty or hold this pool's global block (the SR in use,
  or one the pool used before). Another pool's SR, a file system or any
  other data is refused unless ``--force``.
* **Shared:** the master then writes the new generation to the SR (slots
  emptied, the global block INVALID: not armed yet; the database's region
  is not touched) and asks every host again; each must read that
  generation at its path. A host that reads anything else opens another
  volume under that name: refused. HA is off meanwhile, so the pool is as it
  was after a refusal (its hosts start with HA off, as before).
* Every refusal names each host at fault and what it found, with what to do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from hacluster.core.pool import PoolError
from hacluster.storage.volume import MIN_SIZE, MiB

Answer = AsyncIterator[dict[str, Any]]
Found = Mapping[str, dict[str, Any] | str]


class SRControl(Protocol):
    """What the check needs of the master's daemon."""

    def my_uuid(self) -> str: ...
    async def ask_all(self, request: dict[str, Any],
                      hosts: list[str]) -> dict[str, dict[str, Any] | str]: ...
    async def prepare_sr(self, sr: str, generation: int) -> None: ...


def _not_looked(found: dict[str, Any] | str) -> str | None:
    """Why a host could not look at the SR (no answer, or its own error), or None."""
    if isinstance(found, str):
        return found
    return str(found["error"]) if "error" in found else None


def _unfit(found: dict[str, Any] | str) -> str | None:
    """Why one host cannot use the SR as it found it, or None."""
    if (why := _not_looked(found)) is not None or isinstance(found, str):
        return why
    size = int(found["size"])
    if size < MIN_SIZE:
        return (f"{found['path']} holds {size} bytes; a heartbeat SR needs at least "
                f"{MIN_SIZE} ({MIN_SIZE // MiB} MiB): grow the volume")
    if found["current_direct"] and not found["direct"]:
        return (f"{found['path']} refuses O_DIRECT, where the SR in use takes it: hosts "
                "would read each other's heartbeats through page caches")
    return None


def _refuse(what: str, faults: dict[str, str], names: Mapping[str, str]) -> PoolError:
    listed = "; ".join(f"{names.get(host, host)}: {why}" for host, why in faults.items())
    return PoolError(f"{what}: {listed}")


async def check_sr(control: SRControl, sr: str, hosts: list[str], names: Mapping[str, str],
                       generation: int, force: bool) -> Answer:
    """Check SR ``sr`` on every host, format it for ``generation`` and check that every
    host shares it (see the rules); raise :class:`PoolError` on any refusal."""
    yield {"progress": f"checking heartbeat SR {sr} on all {len(hosts)} hosts"}
    found = await control.ask_all({"op": "sr-probe", "sr": sr}, hosts)
    faults = {host: why for host, answer in found.items()
              if (why := _unfit(answer)) is not None}
    if faults:
        raise _refuse(f"heartbeat SR {sr} is not usable", faults, names)
    mine = found[control.my_uuid()]
    assert isinstance(mine, dict)
    if mine.get("holds") and not force:
        raise PoolError(f"heartbeat SR {sr} at {mine['path']} {mine['holds']}: refusing to "
                        "format it. If nothing uses it, --force formats it (a pool still "
                        "using it loses its heartbeat SR)")
    yield {"progress": f"writing generation {generation} to heartbeat SR {sr} at "
                       f"{mine['path']} (not armed yet)"}
    await control.prepare_sr(sr, generation)
    again = await control.ask_all({"op": "sr-probe", "sr": sr}, hosts)
    unshared = {host: _not_shared(answer, generation) for host, answer in again.items()}
    faults = {host: why for host, why in unshared.items() if why is not None}
    if faults:
        raise _refuse(f"heartbeat SR {sr} is not one volume shared by every host (the master "
                      f"wrote generation {generation} to it)", faults, names)
    yield {"progress": f"heartbeat SR {sr}: every host reads the same volume"}


def _not_shared(found: dict[str, Any] | str, generation: int) -> str | None:
    if (why := _not_looked(found)) is not None or isinstance(found, str):
        return why
    if found.get("generation") != generation:
        seen = found.get("holds") or (f"generation {found.get('generation')}"
                                      if "generation" in found else "nothing of this pool")
        return f"reads {seen} at {found['path']}: another volume than the master's"
    return None
