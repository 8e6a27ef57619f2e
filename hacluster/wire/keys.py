"""Keys derived from the pool key: one per purpose, never the pool key itself.

Rules:

* The pool key (32 random bytes in ``pool.key``) seals and MACs nothing
  directly. Each purpose has its own key, HKDF-SHA256 of the pool key with no
  salt and the purpose's info string, 32 bytes: :func:`derive_key` is the one
  derivation and :class:`Purpose` the one table of info strings.
* Keys of different purposes are independent: a heartbeat packet written into
  a slot, a slot sent as a packet, an RPC frame or a redo-log record replayed
  anywhere else fails authentication, and learning one purpose's key reveals
  neither the pool key nor another purpose's key.
* An info string is part of the wire or disk format of its purpose: changing
  one makes every packet, slot, SR header or record of that purpose
  unreadable by the previous release, so its version suffix changes with it.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32


class Purpose(Enum):
    """What a derived key authenticates; the value is its HKDF info string."""

    HEARTBEAT = b"hacluster heartbeat v1"  # UDP heartbeat reports (wire/codec.py)
    SLOT = b"hacluster slot v1"  # reports in the heartbeat SR's slots (storage/sr.py)
    SR_HEADER = b"hacluster sr header v1"  # the SR's global block MAC (storage/sr.py)
    REDO_LOG = b"hacluster redo log v1"  # redo-log records and backups (storage/redolog.py)
    RPC = b"hacluster rpc v1"  # host RPC frames (wire/rpc.py)


def check_pool_key(pool_key: bytes) -> None:
    """Refuse a pool key of the wrong length (``ValueError`` saying so)."""
    if len(pool_key) != KEY_BYTES:
        raise ValueError(f"a pool key is {KEY_BYTES} bytes, got {len(pool_key)}")


@lru_cache(maxsize=64)
def derive_key(pool_key: bytes, purpose: Purpose) -> bytes:
    """The key for ``purpose``: HKDF-SHA256(pool key, info = the purpose's string)."""
    check_pool_key(pool_key)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose.value)
    return hkdf.derive(pool_key)
