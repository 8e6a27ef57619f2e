"""Replacing a small file atomically: the local backup of the pool database, TLS keys and
certificates.

Rules: a reader, or the host after a crash, sees the old file or the new one,
never a mix: the data goes to a temporary file in the same directory, which is
given ``mode`` (exactly, whatever the umask), flushed and fsynced, renamed over
the file, and the directory is fsynced so the rename itself is durable. On any
failure the temporary file is removed and the old file is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (file ``mode``), atomically and durably."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
