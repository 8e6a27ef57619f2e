"""The master lock, voted on the statefile.

Rules:

* Every armed host outside survival-rule-2 mode requests the lock.
* Each host grants exactly one host, published in its slot: the sitting
  holder (granted by every liveset member) while it is in the liveset and
  still requests, so a joining host follows the sitting master; otherwise the
  lowest-index requester of the liveset.
* A host holds the lock while it is in its liveset and the latest slot of every
  liveset member, its own included, grants it.
* Grants leave a host only when it leaves the granter's committed liveset, which
  happens after the fence window: a new master can only appear once the old
  one has fenced. No lock exists in survival-rule-2 mode.
"""

from __future__ import annotations

from collections.abc import Mapping

from hacluster.core.messages import HostSet


def choose_grant(
    liveset: HostSet, requesting: HostSet, grants: Mapping[int, int | None]
) -> int | None:
    """Whom to grant the lock to, given each host's latest published grant.

    The sitting holder (granted by every liveset member) keeps the grant while it
    requests; otherwise the lowest-index requester of the liveset gets it.
    """
    candidates = liveset & requesting
    granted = {grants.get(p) for p in liveset}
    if len(granted) == 1:
        (holder,) = granted
        if holder is not None and holder in candidates:
            return holder
    return min(candidates) if candidates else None


def holds_lock(me: int, liveset: HostSet, grants: Mapping[int, int | None]) -> bool:
    """Whether every liveset member's latest published grant names ``me``."""
    return me in liveset and all(grants.get(p) == me for p in liveset)
