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
* A :class:`KeyRing` is what every consumer holds instead of one key: it seals
  and MACs with its *current* pool key only, and opens and verifies with the
  current key or its one *other* accepted key (at most two, for one rotation
  step: the *next* key, accepted but not yet used, or the *previous* one,
  still accepted until it is retired). :meth:`KeyRing.open_with` is the one
  place that tries them, current first: a frame the current key opens costs
  nothing more; only one it fails on costs one more attempt. A ring is
  immutable: a rotation step makes a new ring, which the holder swaps in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
T = TypeVar("T")


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


@lru_cache(maxsize=16)
def aead(derived: bytes) -> ChaCha20Poly1305:
    """The ChaCha20-Poly1305 cipher of a derived key (cached: opening tries each key)."""
    return ChaCha20Poly1305(derived)


@dataclass(frozen=True)
class KeyRing:
    """The pool keys a host holds: ``current`` seals; ``next`` (accepted, a rotation
    under way) or ``previous`` (switched from, not yet retired) also opens."""

    current: bytes
    next: bytes | None = None
    previous: bytes | None = None

    def __post_init__(self) -> None:
        for key in (self.current, self.next, self.previous):
            if key is not None:
                check_pool_key(key)
        if self.next is not None and self.previous is not None:
            raise ValueError("a key ring holds at most two keys: a next or a previous one")
        if self.other == self.current:
            raise ValueError("a key ring's other key must differ from its current key")

    @property
    def other(self) -> bytes | None:
        """The second key accepted, if any."""
        return self.next if self.next is not None else self.previous

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Every pool key that opens, current first."""
        return (self.current,) if self.other is None else (self.current, self.other)

    def sealing(self, purpose: Purpose) -> bytes:
        """The derived key that seals or MACs for ``purpose``: the current key's."""
        return derive_key(self.current, purpose)

    def open_with(self, purpose: Purpose, attempt: Callable[[bytes], T],
                  refused: type[Exception] | tuple[type[Exception], ...]) -> T:
        """``attempt(derived key)`` with each accepted key for ``purpose``, current first:
        the first result, or the last key's ``refused`` exception if every one fails."""
        *earlier, last = self.keys
        for key in earlier:
            try:
                return attempt(derive_key(key, purpose))
            except refused:
                pass
        return attempt(derive_key(last, purpose))

    # ------------------------------------------------------------ rotation steps
    def accepting(self, new: bytes) -> KeyRing:
        """Step 1: ``new`` opens too, nothing is sealed with it yet."""
        if self.other not in (None, new):
            raise ValueError("a rotation is already under way: finish or drop it first")
        return KeyRing(self.current, next=new)

    def switched(self, new: bytes) -> KeyRing:
        """Step 2: seal with ``new`` (accepted before); the old key still opens."""
        if self.current == new:
            return self  # done already: the step is idempotent
        if self.next != new:
            raise ValueError("this host does not hold that key: it was not accepted here")
        return KeyRing(new, previous=self.current)

    def alone(self) -> KeyRing:
        """Step 3 (or the drop of step 1): the current key alone."""
        return KeyRing(self.current)


Keys = KeyRing | bytes  # a ring, or one pool key alone


def as_ring(keys: Keys) -> KeyRing:
    """``keys`` as a ring (one pool key: a ring of that key alone)."""
    return keys if isinstance(keys, KeyRing) else KeyRing(keys)
