"""A FUSE passthrough that puts storage faults under a node's open descriptors.

Rules:

* It serves one directory holding ``sr`` (the heartbeat SR, passed through to
  the backing file or block device) and ``control``; it runs as its own
  process, one per lab host, so each host can fail alone.
* Writing a mode to ``control`` changes, for every later and every waiting
  request: ``ok`` passes through; ``error`` fails with EIO; ``hang`` blocks
  the request until the mode changes (the node's I/O deadline sees it);
  ``slow`` delays each request by ``--slow`` seconds.
* The mount uses ``direct_io``: no page cache between the node and here, so
  what one host writes, another reads.
* ``--refuse-direct`` makes it a medium that refuses ``O_DIRECT`` opens
  (EINVAL, as tmpfs did before Linux 6.6): what ``pool init`` and ``node
  --check`` must notice.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import threading
import time
from typing import Any

MODES = ("ok", "error", "hang", "slow")


def serve(backing: str, mountpoint: str, slow: float, refuse_direct: bool = False) -> int:
    import mfusepy as fuse

    class FaultFS(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def __init__(self) -> None:
            self.fd = os.open(backing, os.O_RDWR | os.O_DSYNC)
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
            self.mode = "ok"
            self.changed = threading.Condition()

        def _gate(self) -> None:
            with self.changed:
                while self.mode == "hang":
                    self.changed.wait()
                mode = self.mode
            if mode == "error":
                raise fuse.FuseOSError(errno.EIO)
            if mode == "slow":
                time.sleep(slow)

        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            now = time.time_ns()
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2,
                        "st_atime": now, "st_mtime": now, "st_ctime": now}
            if path in ("/sr", "/control"):
                size = self.size if path == "/sr" else 16
                return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": size,
                        "st_atime": now, "st_mtime": now, "st_ctime": now}
            raise fuse.FuseOSError(errno.ENOENT)

        def readdir(self, path: str, fh: Any) -> list[str]:
            return [".", "..", "sr", "control"]

        def open(self, path: str, flags: int) -> int:
            if path not in ("/sr", "/control"):
                raise fuse.FuseOSError(errno.ENOENT)
            if refuse_direct and flags & os.O_DIRECT:
                raise fuse.FuseOSError(errno.EINVAL)
            return 0

        def truncate(self, path: str, length: int, fh: Any = None) -> int:
            return 0

        def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
            if path == "/control":
                return (self.mode + "\n").encode()[offset : offset + size]
            self._gate()
            return os.pread(self.fd, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
            if path == "/control":
                mode = data.decode().strip()
                if mode not in MODES:
                    raise fuse.FuseOSError(errno.EINVAL)
                with self.changed:
                    self.mode = mode
                    self.changed.notify_all()
                return len(data)
            self._gate()
            return os.pwrite(self.fd, data, offset)

        def fsync(self, path: str, datasync: int, fh: Any) -> int:
            self._gate()
            return 0

    fuse.FUSE(FaultFS(), mountpoint, foreground=True, direct_io=True, nothreads=False)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="hacluster storage-fault FUSE layer")
    parser.add_argument("--backing", required=True)
    parser.add_argument("--mount", required=True)
    parser.add_argument("--slow", type=float, default=0.5)
    parser.add_argument("--refuse-direct", action="store_true",
                        help="refuse O_DIRECT opens, as some file systems do")
    args = parser.parse_args()
    return serve(args.backing, args.mount, args.slow, args.refuse_direct)


if __name__ == "__main__":
    sys.exit(main())
