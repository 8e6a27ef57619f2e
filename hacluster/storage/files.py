"""Replacing a small file atomically: the local backup of the pool database, TLS keys and
certificates.

Rules: a reader, or the host after a crash, sees the old file or the new one,
never a mix: the data goes to a temporary file in the same directory, which is
given ``mode`` (exactly, whatever the umask), flushed and fsynced, renamed over
the file, and the directory is fsynced so the rename itself is durable. On any
failure the temporary file is removed and the old file is untouched. The two
steps can be split (:class:`StagedFile`): a caller that must not go ahead when
the disk fails stages the data first and puts it in place later.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class StagedFile:
    """``data`` written and fsynced to a temporary file beside ``path``, not yet in place.

    The constructor raises the OSError when the data cannot be written (a full,
    read-only or failing disk), leaving nothing behind; :meth:`install` renames
    the file over ``path`` and fsyncs the directory; :meth:`discard` removes it."""

    def __init__(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        self.path = path
        descriptor, self.temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                                      dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as out:
                os.fchmod(out.fileno(), mode)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            self.discard()
            raise

    def install(self) -> None:
        """Replace ``path`` with the staged data, durably."""
        try:
            os.replace(self.temporary, self.path)
        except BaseException:
            self.discard()
            raise
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (file ``mode``), atomically and durably."""
    StagedFile(path, data, mode).install()
