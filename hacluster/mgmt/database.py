"""The master's pool database service: durable changes, and loading the newest copy.

Rules (spec section 7):

* A change is acknowledged (``commit`` returns) only after it is in the redo
  log on the heartbeat SR's metadata region, in the SR's anchor
  (:mod:`hacluster.storage.anchor`) *and* in this host's local backup; a
  refused change raises :class:`PoolError`, nothing of it is in force, and
  the next change works.
* The local backup is staged first (written and fsynced beside the old one):
  a full, read-only or failing local disk refuses the change before the redo
  log is touched. A redo-log write that fails is taken back (the change is
  refused). Only when the log took the change and a later step fails (the
  anchor, putting the staged backup in place) or the take-back itself fails
  is the change possibly in force but not acknowledged: ``commit`` raises the
  OSError, and a change the log took is held and told to the listeners, as a
  new master would load it, so the next change follows it.
* Changes are committed one at a time, in order; the redo log gets the
  change itself (a delta), rolling over to a fresh snapshot when its half is
  full, so a change is written once whatever the database's size.
* Loading (a new master) takes the copy with the highest generation among
  the redo log, the local backup and any backups handed in (other hosts');
  a copy that does not decode is skipped with a note, never trusted. If the
  winner is not the redo log's, a snapshot of it is written there first, so
  the log always holds the newest state before anything new is acknowledged.
  With no copy anywhere, the database is seeded from the pool file.
* **No rollback.** A load whose newest copy is older than the SR's anchor
  (a generation the master acknowledged) is refused with
  :class:`RolledBack`: the log was rolled back or damaged and no backup at
  hand holds what was lost; nothing is written. A load that had to take a
  backup newer than the log, or found a log without an anchor, goes ahead
  with a :attr:`Database.warnings` entry (the caller raises an alert).
* **Key rotation.** Everything is written with the key ring's current key and
  read with either of its keys. :meth:`Database.rekey` (step 2 of a rotation,
  on the master) swaps the ring under the commit lock and rewrites what the
  SR holds under the new key: the global block, a fresh snapshot of the
  redo log (in the other half), the anchor and the local backup; so once the
  old key is retired, nothing the pool needs is MACed with it.
* **Moving** (:meth:`Database.move`, HA enabled on another heartbeat SR): a
  snapshot of the database and the anchor are written to the new SR first;
  only then do changes go there. The old SR keeps what it held (its log and
  anchor, a generation behind the next change).
* Blocking I/O runs in one thread of its own (not the heartbeat I/O thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from hacluster.core.pool import PoolError
from hacluster.core.pooldb import PoolDB, apply
from hacluster.model.pooldata import from_data, to_data
from hacluster.storage.anchor import read_anchor, write_anchor
from hacluster.storage.redolog import (
    NotWritten,
    RecordCorrupt,
    RedoLog,
    load_backup,
    save_backup,
    stage_backup,
)
from hacluster.storage.sr import BLOCK, HEARTBEAT_REGION, BlockDevice, reseal_header
from hacluster.wire.keys import KeyRing, Keys, as_ring

T = TypeVar("T")


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def snapshot_bytes(db: PoolDB) -> bytes:
    return pack(to_data(db))


def from_snapshot(payload: bytes) -> PoolDB:
    try:
        return from_data(unpack(payload))
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        raise PoolError(f"database snapshot does not decode: {error}") from None


class RolledBack(PoolError):
    """The newest copy at hand is older than a generation the master acknowledged."""


@dataclass(frozen=True)
class Copy:
    """One candidate copy of the database and where it came from."""

    source: str
    db: PoolDB


class Database:
    def __init__(self, db: PoolDB, device: BlockDevice, backup: Path, key: Keys) -> None:
        self.db = db
        self.snapshot = snapshot_bytes(db)  # of ``db``: what backups are made of
        self.device = device
        self.key = as_ring(key)
        self.redo = self._redo_log(device)
        self.backup = backup
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pooldb")
        self.lock = asyncio.Lock()
        self.notes: list[str] = []
        self.warnings: list[str] = []  # found at load: the log was damaged or rolled back
        self.listeners: list[Callable[[PoolDB], None]] = []

    # ------------------------------------------------------------ loading
    @classmethod
    async def open(cls, sr: Path, backup: Path, key: Keys, seed: PoolDB,
                   others: Iterable[tuple[str, bytes]] = ()) -> Database:
        """The newest copy among the SR's redo log, ``backup`` and ``others``."""
        database = cls(seed, BlockDevice(sr), backup, key)
        try:
            copies, logged = await database._run(lambda: database._copies(others))
            anchored = await database._run(database._read_anchor)
            best = max(copies, key=lambda c: c.db.generation, default=None)
            database._check_rollback(best, logged, anchored)
        except BaseException:
            database.close()
            raise
        if best is None:
            database.notes.append("no copy of the database found: seeded from the pool file")
            best = Copy("pool file", seed)
        database.db, database.snapshot = best.db, snapshot_bytes(best.db)
        database.notes.append(f"loaded generation {best.db.generation} from {best.source}")
        if logged is None or logged < best.db.generation:
            await database._run(database._write_snapshot)
        elif anchored is None or anchored < best.db.generation:
            await database._run(lambda: write_anchor(database.device, key, best.db.generation))
        return database

    def _redo_log(self, device: BlockDevice) -> RedoLog:
        """The redo log in ``device``'s metadata region (two equal halves of whole blocks)."""
        size = os.lseek(device.fd, 0, os.SEEK_END) - HEARTBEAT_REGION
        size -= size % (2 * BLOCK)
        return RedoLog(device, self.key, HEARTBEAT_REGION, size)

    async def move(self, sr: Path) -> None:
        """Keep the database on the SR at ``sr`` from now on (see the rules). Raises
        OSError or ValueError (the SR's log is ahead of this database), changing nothing."""
        async with self.lock:
            device = BlockDevice(sr)
            try:
                redo = self._redo_log(device)
                generation, snapshot = self.db.generation, self.snapshot

                def write() -> None:
                    redo.write_snapshot(generation, snapshot)
                    write_anchor(device, self.key, generation)

                await self._run(write)
            except BaseException:
                device.close()
                raise
            old, self.device, self.redo = self.device, device, redo
            self.io.submit(old.close)

    def _read_anchor(self) -> int | None:
        anchor = read_anchor(self.device, self.key)
        self.notes += anchor.notes
        return anchor.generation

    def _check_rollback(self, best: Copy | None, logged: int | None,
                        anchored: int | None) -> None:
        """Refuse a newest copy older than the anchor; warn of a log found behind."""
        newest = best.db.generation if best is not None else None
        if anchored is not None and (newest is None or newest < anchored):
            found = "no copy at all" if best is None else f"generation {newest} ({best.source})"
            raise RolledBack(
                f"refusing to load the pool database: the SR's anchor says generation "
                f"{anchored} was acknowledged, but the newest copy found is {found}: the "
                f"redo log was rolled back or damaged and no host's backup that answered "
                f"holds the lost changes. Bring back a host whose backup holds generation "
                f"{anchored} or newer, or accept the loss (docs/operations.md)")
        if newest is None or best is None:
            return
        if (logged is None and anchored is not None) or (logged is not None and logged < newest):
            held = "no state" if logged is None else f"generation {logged}"
            self.warnings.append(
                f"the SR redo log holds {held}, older than {best.source} (generation "
                f"{newest}): it was rolled back or damaged; loaded generation {newest} and "
                "rewrote it into the log")
        if logged is not None and anchored is None:
            self.warnings.append(
                f"the SR holds no database anchor although its redo log holds generation "
                f"{logged}: its anchor blocks were zeroed (or the SR predates anchors); "
                "a rollback before this load could not be detected. Anchored from now on")

    def _copies(self, others: Iterable[tuple[str, bytes]]) -> tuple[list[Copy], int | None]:
        copies: list[Copy] = []
        logged: int | None = None
        loaded = self.redo.load()
        if loaded is not None:
            try:
                db = from_snapshot(loaded.snapshot)
                for delta in loaded.deltas:
                    db = apply(db, unpack(delta), replay=True)
                copies.append(Copy("the SR redo log", db))
                logged = db.generation
            except PoolError as error:
                self.notes.append(f"redo log skipped: {error}")
            self.notes += list(loaded.skipped)
        try:
            mine = load_backup(self.backup, self.key)
        except RecordCorrupt as error:
            self.notes.append(f"local backup skipped: {error}")
            mine = None
        candidates = [("the local backup", mine[1])] if mine else []
        for source, payload in [*candidates, *others]:
            try:
                copies.append(Copy(source, from_snapshot(payload)))
            except PoolError as error:
                self.notes.append(f"{source} skipped: {error}")
        return copies, logged

    async def rekey(self, keys: KeyRing, rewrite: bool) -> None:
        """Write with ``keys`` from now on; with ``rewrite``, rewrite the global block, a
        snapshot, the anchor and the local backup under its current key."""
        async with self.lock:
            self.key = keys
            self.redo.rekey(keys)
            if rewrite:
                await self._run(lambda: reseal_header(self.device, keys))
                await self._run(self._write_snapshot)

    def _write_snapshot(self) -> None:
        self.redo.write_snapshot(self.db.generation, self.snapshot)
        write_anchor(self.device, self.key, self.db.generation)
        save_backup(self.backup, self.db.generation, self.snapshot, self.key)

    # ------------------------------------------------------------ changes
    def check(self, change: Mapping[str, Any], live: Iterable[str] | None = None) -> None:
        """Refuse (PoolError) what :meth:`commit` would refuse; write nothing."""
        apply(self.db, change, live)

    async def commit(self, change: Mapping[str, Any],
                     live: Iterable[str] | None = None) -> PoolDB:
        """Make ``change`` durable and return the new database (or raise PoolError)."""
        async with self.lock:
            new = apply(self.db, change, live)
            payload = snapshot_bytes(new)
            late_error = await self._run(lambda: self._write(new, dict(change), payload))
            self.db, self.snapshot = new, payload  # in the redo log: in force from now on
        for listener in self.listeners:
            listener(new)
        if late_error is not None:
            raise late_error  # in force, but not acknowledged
        return new

    def _write(self, new: PoolDB, change: dict[str, Any], payload: bytes) -> OSError | None:
        """The backup staged, the change into the redo log, the anchor, the backup in place.

        Raises (nothing in force) up to the log's append; returns the error of
        a step after it (in force, not acknowledged)."""
        try:
            staged = stage_backup(self.backup, new.generation, payload, self.key)
        except OSError as error:
            raise PoolError(f"change refused, nothing changed: this host's local backup "
                            f"cannot be written ({error})") from error
        try:
            self.redo.append(new.generation, pack(change), lambda: payload)
        except NotWritten as error:
            staged.discard()
            raise PoolError(f"change refused, nothing changed: {error}") from error
        except ValueError as error:  # refused by the log before writing (too large)
            staged.discard()
            raise PoolError(f"change refused, nothing changed: {error}") from error
        except BaseException:
            staged.discard()  # the take-back failed too: the record may have landed
            raise
        try:
            write_anchor(self.device, self.key, new.generation)
            staged.install()
        except OSError as error:
            staged.discard()
            return error
        return None

    async def _run(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io, job)

    def close(self) -> None:
        self.io.submit(self.device.close)  # after any write still in flight
        self.io.shutdown(wait=False)
