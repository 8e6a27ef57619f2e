"""The pool key's files on a host, before, during and after a key rotation.

Rules:

* ``key_file`` (``pool.key``) holds the current pool key: 32 bytes, raw or as
  64 hex digits. During a rotation a second file beside it names the other
  accepted key: ``pool.key.next`` (accepted, not yet sealing: after step 1)
  or ``pool.key.previous`` (the key switched from, not yet retired: after
  step 2). At most one of them is in force, as in a
  :class:`~hacluster.wire.keys.KeyRing`.
* :func:`load_ring` reads what the files say, so a host restarted in the
  middle of a rotation opens with both keys. A second file holding the
  current key itself is a leftover of a step cut short and is ignored.
* :func:`store_ring` makes the files say what a ring holds, every write
  with :func:`~hacluster.storage.files.write_atomically` (mode 0600 from the
  first byte, renamed into place, fsynced). Its order makes a crash at any
  point leave a ring a host can run with: the other key's file first, then
  ``pool.key``, then the stale file removed. So the step 2 switch
  (K with next N to N with previous K) writes ``.previous`` = K, then
  ``pool.key`` = N (the commit point), then removes ``.next``.
* A key or secret file is read only up to :data:`MAX_KEY_FILE` bytes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hacluster.model.address import ConfigError
from hacluster.storage.files import write_atomically
from hacluster.wire.keys import KeyRing

MAX_KEY_FILE = 4096  # bytes read of a key or secret file: a key is 32 bytes, 64 hex digits
NEXT, PREVIOUS = ".next", ".previous"


def read_small(path: Path, what: str) -> bytes:
    """The first :data:`MAX_KEY_FILE` bytes of a key or secret file; longer is refused."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_KEY_FILE + 1)
    except OSError as error:
        raise ConfigError(f"{what}: {error.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise ConfigError(f"{what}: longer than {MAX_KEY_FILE} bytes: not a key or secret file")
    return data


def read_key(path: Path) -> bytes:
    raw = read_small(path, f"pool key file {path}")
    text = raw.strip()
    if len(raw) == 32:
        return raw
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"pool key file {path}: expected 32 bytes (raw or 64 hex digits)")
    return key


def beside(path: Path, suffix: str) -> Path:
    """``pool.key.next`` or ``pool.key.previous`` for ``pool.key``."""
    return path.with_name(path.name + suffix)


def load_ring(path: Path) -> KeyRing:
    """The keys ``path`` and the file beside it hold (ConfigError if one is unreadable)."""
    current = read_key(path)
    for suffix in (NEXT, PREVIOUS):
        other = beside(path, suffix)
        if other.exists():
            key = read_key(other)
            if key != current:
                return KeyRing(current, **{suffix[1:]: key})
    return KeyRing(current)


def store_ring(path: Path, ring: KeyRing) -> None:
    """Make the files say what ``ring`` holds (see the module's rules for the order)."""
    for suffix, key in ((NEXT, ring.next), (PREVIOUS, ring.previous)):
        if key is not None:
            write_atomically(beside(path, suffix), _text(key))
    if read_key(path) != ring.current:
        write_atomically(path, _text(ring.current))
    for suffix, key in ((NEXT, ring.next), (PREVIOUS, ring.previous)):
        if key is None:
            with contextlib.suppress(FileNotFoundError):
                beside(path, suffix).unlink()


def _text(key: bytes) -> bytes:
    return (key.hex() + "\n").encode()
