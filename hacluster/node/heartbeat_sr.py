"""Which heartbeat SR a host uses, and what it finds on an SR the pool may move to.

Rules:

* A pool's heartbeat SR is named by uuid in its database (``ha.heartbeat_sr``;
  empty: :data:`~hacluster.core.pooldb.DEFAULT_HEARTBEAT_SR`, the SR
  ``node.toml``'s ``sr`` is). Each host maps uuids to paths as it sees them
  (:meth:`~hacluster.node.config.NodeConfig.sr_path`). The slots, the member
  table, the pool database's redo log and its anchor are all on the SR in use.
* At start (:func:`start_sr`) a host uses the SR its database backup names if
  that SR's global block says the pool is active. Otherwise, if exactly one
  other SR it maps holds this pool's active global block (MACed with the pool
  key: the pool moved while this host was away), that one. Otherwise the
  named one (HA off, or the SR unreadable: the start copes as ever). The
  choice itself is :func:`choose`, pure.
* A backup naming an SR that ``node.toml`` does not map stops the start with
  a :class:`~hacluster.model.address.ConfigError` saying what to add.
* :func:`prepare` (the master, at ``pool-ha-enable``) writes the new
  generation to an SR without arming it: every slot emptied, the global block
  INVALID, so the hosts can show they share it; the database's region is not
  touched.
* :func:`describe` is a host's answer to ``pool-ha-enable``'s check of a new
  SR: its path here, its size, whether it takes O_DIRECT, and this pool's
  global block on it (generation, state) or what else it holds. It only reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hacluster.core.pool import PoolError
from hacluster.model.address import ConfigError
from hacluster.node.config import NodeConfig
from hacluster.storage.sr import BlockDevice, GlobalBlock, PoolState, SRError, write_layout
from hacluster.storage.volume import pool_header, probe
from hacluster.wire.keys import Keys


def choose(named: str, active: Mapping[str, bool]) -> str:
    """The SR to use: ``named`` if active, else the only other active one, else ``named``.

    ``active``: for each SR this host maps, whether its global block is this
    pool's and says ACTIVE (SRs not looked at may be left out)."""
    if active.get(named):
        return named
    others = [uuid for uuid, on in active.items() if on and uuid != named]
    return others[0] if len(others) == 1 else named


def is_active(path: Path, keys: Keys) -> bool:
    """Does ``path`` hold this pool's global block in the ACTIVE state? (blocking)"""
    try:
        device = BlockDevice(path)
    except OSError:
        return False
    try:
        return GlobalBlock.decode(device.read(0), keys).state is PoolState.ACTIVE
    except (OSError, SRError):
        return False
    finally:
        device.close()


def start_sr(config: NodeConfig, keys: Keys, named: str) -> tuple[str, Path]:
    """The heartbeat SR this host starts on, and its path (blocking: reads global blocks)."""
    path = config.sr_path(named)
    if path is None:
        raise ConfigError(f"the pool's heartbeat SR is {named!r}, which this host's node.toml "
                          f"does not map: add its path here under [heartbeat_srs] "
                          f"(mapped now: {list(config.sr_uuids)})")
    if is_active(path, keys):
        return named, path
    active = {uuid: is_active(where, keys) for uuid in config.sr_uuids
              if uuid != named and (where := config.sr_path(uuid)) is not None}
    chosen = choose(named, active)
    found = config.sr_path(chosen)
    assert found is not None
    return chosen, found


def describe(config: NodeConfig, keys: Keys, uuid: str) -> dict[str, Any]:
    """What this host finds at SR ``uuid`` (see the rules); ``error`` if it cannot look."""
    path = config.sr_path(uuid)
    if path is None:
        return {"error": f"node.toml maps no path for SR {uuid!r} (add it under "
                         "[heartbeat_srs])"}
    try:
        volume = probe(path)
    except SRError as error:
        return {"error": str(error), "path": str(path)}
    header = pool_header(volume, keys)
    found: dict[str, Any] = {"path": str(path), "size": volume.size, "direct": volume.direct}
    if header is not None:
        found.update(generation=header.generation, state=header.state.name)
    else:
        found["holds"] = volume.contents() or ""
    return found


def prepare(config: NodeConfig, keys: Keys, uuid: str, generation: int) -> None:
    """Write ``generation`` to SR ``uuid``, not armed (see the rules; blocking)."""
    path = config.sr_path(uuid)
    if path is None:
        raise PoolError(f"node.toml maps no path for heartbeat SR {uuid!r}")
    header = GlobalBlock(generation, PoolState.INVALID, None, config.capacity)
    try:
        device = BlockDevice(path)
        try:
            write_layout(device, header, keys)
        finally:
            device.close()
    except OSError as error:
        raise PoolError(f"could not write heartbeat SR {uuid!r} at {path}: {error}") from None
