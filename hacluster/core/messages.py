"""What a host publishes about itself, on the network and in its statefile slot.

Rules:

* One record, :class:`Report`, travels on both channels: as a UDP heartbeat and
  as the content of the host's slot on the heartbeat SR. Encoding (msgpack,
  authentication, checksums, bitmaps) belongs to the wire layer, not here.
* ``seq`` increases with every report a host publishes, on either channel, and
  restarts at 1 with every new ``boot``; a receiver keeps, per peer, the report
  with the greatest ``(boot, seq)``. On the statefile, liveness is judged by the
  slot's ``(boot, seq)`` changing, observed on the reader's own clock.
* ``generation`` is the id of the HA enablement; a report of another
  generation is dropped by the receiver and never takes part in a decision.
* Ages are in milliseconds of the writer's own clock, of the boot it pins for
  each host, and only of hosts it has not removed (``-1``: none): receivers
  read from them when a host last saw them and whether it hears them. They
  are any sequence indexed by host (the wire layer's reads them in place);
  a receiver takes every negative age for none.
* ``fault_episode`` counts the fault handlers the writer entered this boot,
  so that a receiver can tell a new fault from the round it already decided.
* ``epoch`` orders liveset commits (:mod:`hacluster.core.coldstart`): a
  member's is that of its liveset; a joiner's, with ``cold_liveset``, the
  newest committed liveset it knows of, so that what a slot recorded outlives
  the slot being overwritten by its host's next boot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

HostSet = frozenset[int]
EMPTY: HostSet = frozenset()


class Phase(IntEnum):
    """Fault-handler phase of a host (see the state diagram in docs/design.md)."""

    JOINING = 0
    NORMAL = 1
    STABILIZING = 2
    AGREEING = 3
    PROPOSED = 4
    FENCED = 5
    EXCLUDED = 6

    @property
    def in_fault(self) -> bool:
        return self in (Phase.STABILIZING, Phase.AGREEING, Phase.PROPOSED)

    @property
    def armed(self) -> bool:
        """A member running the liveness protocol (not joining, fenced or gone)."""
        return self in _ARMED


_ARMED = frozenset({Phase.NORMAL, Phase.STABILIZING, Phase.AGREEING, Phase.PROPOSED})


@dataclass(frozen=True)
class Report:
    """A host's published state: identity, view, decisions and lock votes."""

    generation: int
    sender: int
    boot: int
    seq: int
    phase: Phase
    liveset: HostSet
    hbdomain: HostSet
    sfdomain: HostSet
    statefile_access: bool
    proposal: HostSet | None = None  # set while PROPOSED: the fence request
    rule2: bool = False  # survival-rule-2 mode
    joining: bool = False
    excluded: bool = False
    statefile_corrupted: bool = False  # a corrupted slot was seen recently
    lock_request: bool = False
    lock_grant: int | None = None
    join_acks: HostSet = EMPTY
    fault_episode: int = 0  # fault handlers this boot has entered
    epoch: int = 0  # of my liveset; a joiner: of the newest liveset it knows (cold start)
    cold_liveset: HostSet = EMPTY  # a joiner: the newest committed liveset it knows
    hb_age_ms: Sequence[int] = field(default=(), compare=False)
    sf_age_ms: Sequence[int] = field(default=(), compare=False)

    @property
    def stamp(self) -> tuple[int, int]:
        """Order of reports from one sender: newer boot first, then sequence."""
        return (self.boot, self.seq)

    @property
    def view(self) -> tuple[HostSet, HostSet, bool]:
        """The part of a report the survival decision is computed from."""
        return (self.hbdomain, self.sfdomain, self.statefile_access)
