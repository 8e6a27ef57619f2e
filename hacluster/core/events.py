"""Inputs to and outputs from a core: plain data, each input carrying ``now``.

Rules:

* ``now`` is the receiving host's monotonic clock in seconds; the core never
  reads a clock itself.
* Storage I/O is requested with :class:`WriteSlot` and :class:`ReadSlots`; the
  adapter answers every request exactly once, with :class:`SlotWritten` and
  :class:`SlotsRead`, reporting errors and deadline overruns as failures.
* Every call returns a list of outputs ending with one :class:`Wakeup`: the
  adapter must deliver a :class:`Tick` no later than its ``at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from hacluster.core.messages import HostSet, Phase, Report


@dataclass(frozen=True)
class SlotCorrupt:
    """A slot whose magic, checksum or authentication failed: "not seen"."""

    reason: str


SlotContent = Report | SlotCorrupt | None


# ----------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class HeartbeatReceived:
    now: float
    report: Report


@dataclass(frozen=True)
class SlotWritten:
    now: float
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class SlotsRead:
    now: float
    slots: Mapping[int, SlotContent] | None  # None when the read failed
    error: str = ""


@dataclass(frozen=True)
class Shutdown:
    """Clean host shutdown: disarm, mark excluded, so peers drop us without fencing."""

    now: float


@dataclass(frozen=True)
class MembersChanged:
    """The pool's hosts changed (a join or an eject, read from the SR's member
    table): ``members`` are the host indices that now belong to the pool."""

    now: float
    members: HostSet


Input = Tick | HeartbeatReceived | SlotWritten | SlotsRead | Shutdown | MembersChanged


# ---------------------------------------------------------------- outputs
class Watchdog(Enum):
    """The watchdogs a core pets: one lease (issue #14; before it, one per channel)."""

    LEASE = "lease"


@dataclass(frozen=True)
class SendHeartbeat:
    report: Report
    to: HostSet


@dataclass(frozen=True)
class WriteSlot:
    report: Report


@dataclass(frozen=True)
class ReadSlots:
    pass


@dataclass(frozen=True)
class PetWatchdog:
    which: Watchdog
    timeout: float


@dataclass(frozen=True)
class Fence:
    reason: str


@dataclass(frozen=True)
class Disarmed:
    """The host left HA cleanly (shutdown); its watchdogs may be stopped."""

    reason: str


@dataclass(frozen=True)
class HostView:
    """One host's view as the survival rule read it."""

    host: int
    hbdomain: HostSet
    sfdomain: HostSet
    statefile_access: bool


@dataclass(frozen=True)
class Removal:
    """Why a removed host is gone by the commit: its own fence report (its last
    words), or unseen by me and by every member of the proposal for ``window``
    since ``last_seen`` (by ``seen_by``, None for me): its lease ran out by then."""

    host: int
    proof: str  # "fence report", "unseen" or "survival rule 2"
    last_seen: float  # core time (NEVER if no one ever saw it)
    seen_by: int | None
    window: float


@dataclass(frozen=True)
class Evidence:
    """Why a fault handler changed the liveset: the views it decided on, the rule,
    and for each removed host its :class:`Removal` (times are the core's clock)."""

    rule: str
    views: tuple[HostView, ...]
    removals: tuple[Removal, ...]
    decided_at: float
    committed_at: float


@dataclass(frozen=True)
class LivesetCommitted:
    liveset: HostSet
    removed: HostSet
    added: HostSet
    excluded: HostSet = frozenset()  # of ``removed``: left cleanly (shut down), not failed
    # a fault handler's reasons; not part of the decision (never compared or printed)
    evidence: Evidence | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class MasterGained:
    pass


@dataclass(frozen=True)
class MasterLost:
    reason: str


@dataclass(frozen=True)
class PhaseChanged:
    old: Phase
    new: Phase
    why: str


@dataclass(frozen=True)
class Suspect:
    """A liveset member dropped out of one of my domains."""

    host: int
    channel: str  # "network" or "statefile"


@dataclass(frozen=True)
class Wait:
    """One thing a host's progress waits on, for people: ``on`` the host waited
    on (``None``: no host in particular), ``reason`` a stable key, ``text`` the
    explanation with the figures of the moment."""

    on: int | None
    reason: str
    text: str


@dataclass(frozen=True)
class Waiting:
    """What the host waits on changed (which hosts or which evidence); empty: nothing."""

    waits: tuple[Wait, ...]


@dataclass(frozen=True)
class Wakeup:
    at: float


Output = (
    SendHeartbeat | WriteSlot | ReadSlots | PetWatchdog | Fence | Disarmed | LivesetCommitted
    | MasterGained | MasterLost | PhaseChanged | Suspect | Waiting | Wakeup
)
