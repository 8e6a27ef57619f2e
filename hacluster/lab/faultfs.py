"""A FUSE passthrough that puts storage faults under nodes' open descriptors.

Rules:

* One process serves a whole lab: a directory ``<i>/`` per host ``i`` (0 to
  ``--hosts`` - 1), each holding ``sr`` (the heartbeat SR, passed through to
  the one backing file or block device) and ``control``. Each host's mode is
  its own, so one host's storage can fail alone, and a 64-host lab runs one
  such process, not 64.
* Writing a mode to a host's ``control`` changes, for every later and every
  waiting request of that host: ``ok`` passes through; ``error`` fails with
  EIO; ``hang`` blocks the request until the mode changes (the node's I/O
  deadline sees it); ``slow`` delays each request by ``--slow`` seconds.
  Requests are served by many threads, so a hung host holds up no other.
* The mount uses ``direct_io``: no page cache between the nodes and here, so
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


def serve(backing: str, mountpoint: str, slow: float, hosts: int = 1,
          refuse_direct: bool = False) -> int:
    import mfusepy as fuse

    class FaultFS(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def __init__(self) -> None:
            self.fd = os.open(backing, os.O_RDWR | os.O_DSYNC)
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
            self.modes = ["ok"] * hosts
            self.changed = threading.Condition()

        def _file(self, path: str) -> tuple[int, str]:
            """``/<host>/<name>`` as (host, name); ENOENT for anything else."""
            parts = path.strip("/").split("/")
            if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) < hosts \
                    and parts[1] in ("sr", "control"):
                return int(parts[0]), parts[1]
            raise fuse.FuseOSError(errno.ENOENT)

        def _gate(self, host: int) -> None:
            with self.changed:
                while self.modes[host] == "hang":
                    self.changed.wait()
                mode = self.modes[host]
            if mode == "error":
                raise fuse.FuseOSError(errno.EIO)
            if mode == "slow":
                time.sleep(slow)

        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            now = time.time_ns()
            times = {"st_atime": now, "st_mtime": now, "st_ctime": now}
            name = path.strip("/")
            if path == "/" or (name.isdigit() and int(name) < hosts):
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times}
            _, kind = self._file(path)
            size = self.size if kind == "sr" else 16
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": size, **times}

        def readdir(self, path: str, fh: Any) -> list[str]:
            if path == "/":
                return [".", "..", *(str(i) for i in range(hosts))]
            return [".", "..", "sr", "control"]

        def open(self, path: str, flags: int) -> int:
            self._file(path)
            if refuse_direct and flags & os.O_DIRECT:
                raise fuse.FuseOSError(errno.EINVAL)
            return 0

        def truncate(self, path: str, length: int, fh: Any = None) -> int:
            return 0

        def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
            host, kind = self._file(path)
            if kind == "control":
                return (self.modes[host] + "\n").encode()[offset : offset + size]
            self._gate(host)
            return os.pread(self.fd, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
            host, kind = self._file(path)
            if kind == "control":
                mode = data.decode().strip()
                if mode not in MODES:
                    raise fuse.FuseOSError(errno.EINVAL)
                with self.changed:
                    self.modes[host] = mode
                    self.changed.notify_all()
                return len(data)
            self._gate(host)
            return os.pwrite(self.fd, data, offset)

        def fsync(self, path: str, datasync: int, fh: Any) -> int:
            self._gate(self._file(path)[0])
            return 0

    fuse.FUSE(FaultFS(), mountpoint, foreground=True, direct_io=True, nothreads=False)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="hacluster storage-fault FUSE layer")
    parser.add_argument("--backing", required=True)
    parser.add_argument("--mount", required=True)
    parser.add_argument("--slow", type=float, default=0.5)
    parser.add_argument("--hosts", type=int, default=1,
                        help="serve the directories 0 .. HOSTS-1, one per host")
    parser.add_argument("--refuse-direct", action="store_true",
                        help="refuse O_DIRECT opens, as some file systems do")
    args = parser.parse_args()
    return serve(args.backing, args.mount, args.slow, args.hosts, args.refuse_direct)


if __name__ == "__main__":
    sys.exit(main())
