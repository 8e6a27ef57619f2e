"""Is a volume fit to be a pool's heartbeat SR, and formatting it only then.

Rules:

* :func:`probe` opens the volume as the node does
  (:class:`~hacluster.storage.sr.BlockDevice`: ``O_DIRECT`` if the medium takes
  it, else buffered, and says which), reads its heartbeat region through that
  descriptor and notes its size. A path that is missing, not a regular file or
  block device, not openable or not readable is an :class:`SRError` saying why.
* A new pool's SR must hold at least :data:`MIN_SIZE` bytes (the heartbeat
  region and :data:`MIN_METADATA` for the pool database's redo log; the
  database uses all the rest), must take ``O_DIRECT`` (hosts must read what
  others wrote, not a page cache) unless buffered I/O is allowed, and must be
  empty: a heartbeat SR's global block (another pool's: a new pool has a new
  key) or any non-zero byte in the heartbeat region (a file system, a
  partition table) is refused unless forced. :func:`require` refuses before
  anything is written.
* Records of a pool the SR held before a forced format stay in its metadata
  region, sealed with that pool's key: the new pool's database never trusts
  them (they do not authenticate) and only notes them.
* Generations are 63 random bits (:func:`new_generation`).
"""

from __future__ import annotations

import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path

from hacluster.storage.sr import (
    BLOCK,
    GLOBAL_MAGIC,
    HEARTBEAT_REGION,
    BlockDevice,
    GlobalBlock,
    PoolState,
    SRError,
    format_sr,
)
from hacluster.wire.keys import Keys

MiB = 1024 * 1024
MIN_METADATA = 8 * MiB
MIN_SIZE = HEARTBEAT_REGION + MIN_METADATA


@dataclass(frozen=True)
class Volume:
    """What :func:`probe` found: the size, whether ``O_DIRECT`` works, the heartbeat region."""

    path: Path
    kind: str  # "file" or "block device"
    size: int
    direct: bool
    head: bytes  # the heartbeat region (as much of it as the volume holds)

    @property
    def io(self) -> str:
        return "O_DIRECT" if self.direct else "buffered I/O (the medium refused O_DIRECT)"

    def contents(self) -> str | None:
        """What the volume already holds, in words, or None when its heartbeat region is zero."""
        if self.head[:len(GLOBAL_MAGIC)] == GLOBAL_MAGIC:
            return "holds a heartbeat SR (another pool's, or an earlier format's)"
        offset = next((i for i, byte in enumerate(self.head) if byte), None)
        if offset is None:
            return None
        return (f"is not empty (non-zero data at byte {offset}: a file system, a partition "
                "table, another program's data?)")


def pool_header(volume: Volume, keys: Keys) -> GlobalBlock | None:
    """The global block of the pool ``keys`` belong to, if the volume holds one (its MAC
    checks); None for an empty volume, another pool's SR or anything else."""
    if volume.head[:len(GLOBAL_MAGIC)] != GLOBAL_MAGIC:
        return None
    try:
        return GlobalBlock.decode(volume.head[:BLOCK], keys)
    except SRError:
        return None


def new_generation() -> int:
    return random.SystemRandom().getrandbits(63)


def probe(path: Path) -> Volume:
    """Open ``path`` as the node would and read its heartbeat region (see the rules)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SRError(f"{path} does not exist: give the shared volume's device path as this "
                      f"host sees it (or, for a test, a file of at least {MIN_SIZE // MiB} "
                      "MiB)") from None
    except OSError as error:
        raise SRError(f"{path}: cannot reach it: {error.strerror}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise SRError(f"{path} is neither a regular file nor a block device")
    try:
        device = BlockDevice(path)
    except OSError as error:
        raise SRError(f"{path}: cannot open it for reading and writing: "
                      f"{error.strerror}") from None
    try:
        size = os.lseek(device.fd, 0, os.SEEK_END)
        blocks = min(size, HEARTBEAT_REGION) // BLOCK
        try:
            head = device.read_blocks(0, blocks) if blocks else b""
        except OSError as error:
            how = "with O_DIRECT" if device.direct else "buffered"
            raise SRError(f"{path}: reading it {how} failed: "
                          f"{error.strerror or error}") from None
        return Volume(path, "file" if stat.S_ISREG(mode) else "block device", size,
                      device.direct, head)
    finally:
        device.close()


def require(volume: Volume, force: bool = False, allow_buffered: bool = False) -> None:
    """Refuse, saying why and what to do, a volume unfit for a new pool's SR."""
    if volume.size < MIN_SIZE:
        raise SRError(f"{volume.path} holds {volume.size} bytes; an SR needs at least "
                      f"{MIN_SIZE} ({HEARTBEAT_REGION // MiB} MiB of heartbeat region and "
                      f"{MIN_METADATA // MiB} MiB for the pool database)")
    if not volume.direct and not allow_buffered:
        raise SRError(f"{volume.path} refuses O_DIRECT: hosts would read each other's "
                      "heartbeats through page caches. Use a block device (or a file on a "
                      "file system that takes O_DIRECT); --allow-buffered accepts it for a "
                      "single-machine test")
    contents = volume.contents()
    if contents is not None and not force:
        raise SRError(f"{volume.path} {contents}: refusing to format it. If nothing uses it, "
                      "--force formats it (a pool still using it loses its heartbeat SR)")


def format_volume(volume: Volume, hosts: int, key: Keys, generation: int,
                  state: PoolState = PoolState.INIT) -> GlobalBlock:
    """Lay out the SR on a volume :func:`require` accepted: global block and empty slots."""
    return format_sr(volume.path, hosts, key, generation, metadata=MIN_METADATA, state=state)


def create_sr_file(path: Path, size: int = MIN_SIZE) -> None:
    """A new sparse file of ``size`` bytes for an SR (a lab's); never an existing one."""
    with path.open("xb") as new:
        new.truncate(size)
