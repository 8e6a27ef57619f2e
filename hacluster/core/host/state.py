"""The state of one host's core, shared by every layer of ``HostCore``.

Rules:

* One :class:`HostState` holds everything a host knows. The layers of
  :mod:`hacluster.core.host` are mixins over it, each adding the methods of
  one concern, and :class:`hacluster.core.node.HostCore` composes them.
* The phase changes only through :meth:`HostState._set_phase`, naming its
  trigger; an edge :data:`hacluster.core.phases.TRANSITIONS` does not allow
  raises.
* The outputs of the input being handled collect in ``_out``, in order.
* A host requests the master lock while armed and outside survival-rule-2 mode.
* **Derived, not stored.** What a step derives from the peers several times
  (the liveset's fresh members, the grants published, the joiners) is kept
  only until the next input or change of a peer, a pin or the liveset
  (:meth:`HostState._forget_derived`), so it is always what computing it
  afresh would give; so is whether a peer's report shows it heard me (kept
  with that report, which never changes), and a set equal to my liveset
  found once (:meth:`HostState._is_liveset`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from hacluster.core import phases
from hacluster.core.coldstart import ColdWatch
from hacluster.core.events import Fence, HostView, MasterLost, Output, PhaseChanged
from hacluster.core.messages import EMPTY, HostSet, Phase, Report
from hacluster.core.phases import Trigger
from hacluster.core.timing import Timing

NEVER = -math.inf


class Mode(Enum):
    STATEFILE = "statefile"
    CLUSTERED = "clustered"


@dataclass(frozen=True)
class CoreConfig:
    """A generation's settings: ``hosts`` is its index space (one SR slot each),
    ``members`` the indices that belong to the pool when the core starts."""

    timing: Timing
    hosts: int
    generation: int
    mode: Mode = Mode.STATEFILE
    members: HostSet | None = None  # the pool's hosts at start; None: every index

    def __post_init__(self) -> None:
        if self.hosts < 1:
            raise ValueError(f"a pool needs at least one host, got {self.hosts}")
        if self.members is not None and (
                not self.members or not self.members <= frozenset(range(self.hosts))):
            raise ValueError(f"members {sorted(self.members)} must be a non-empty subset of "
                             f"0..{self.hosts - 1}")

    @property
    def initial_members(self) -> HostSet:
        return frozenset(range(self.hosts)) if self.members is None else self.members


@dataclass
class Peer:
    """What one host knows of another."""

    pinned_boot: int | None = None
    last_net: float = NEVER  # when its latest heartbeat was accepted
    net_stamp: tuple[int, int] = (-1, -1)
    slot_stamp: tuple[int, int] | None = None
    slot_changed: float = NEVER  # when its slot was last seen changing
    report: Report | None = None  # freshest report from either channel
    report_at: float = NEVER
    slot_report: Report | None = None  # latest report read from its slot
    fenced_boot: int | None = None  # the boot of its latest "I fenced" report
    # whether ``report`` shows it heard me (Domains._compute_domains): judged once per report
    hears_me_in: Report | None = None
    hears_me: bool = False

    def last_seen(self) -> float:
        return max(self.last_net, self.slot_changed)


@dataclass
class Counters:
    """Dropped input, for status displays."""

    wrong_generation: int = 0
    stale: int = 0
    foreign_sender: int = 0
    corrupt_slots: int = 0
    read_errors: int = 0
    write_errors: int = 0


@dataclass
class HostState:
    """What host ``me`` knows; the layers of ``HostCore`` read and change it."""

    config: CoreConfig
    me: int
    boot: int
    now: float
    liveset: HostSet | None = None  # None: joining
    phase: Phase = Phase.JOINING
    rule2: bool = False
    is_master: bool = False
    counters: Counters = field(default_factory=Counters)
    previous: Report | None = None  # my slot when my daemon started: my last boot's report
    epoch: int = field(init=False, default=0)  # of my liveset (hacluster.core.coldstart)
    # the configuration, read on every step: kept at hand (a CoreConfig is frozen)
    timing: Timing = field(init=False)
    statefile_mode: bool = field(init=False)
    _fresh_for: float = field(init=False)  # min(T1, T2): how long a report stays fresh
    # domains
    members: HostSet = field(init=False, default=EMPTY)  # the pool's hosts, as I know them
    _wanted: HostSet = field(init=False, default=EMPTY)  # the latest member table's hosts
    peers: list[Peer] = field(init=False)
    hbdomain: HostSet = field(init=False, default=EMPTY)
    sfdomain: HostSet = field(init=False, default=EMPTY)
    _suspected: set[tuple[int, str]] = field(init=False, default_factory=set)
    _order_of: HostSet | None = field(init=False, default=None)  # the last set sorted
    _order: tuple[int, ...] = field(init=False, default=())  # ... and its hosts in order
    # derived from the peers, kept until the next input or change of a peer or the
    # liveset (_forget_derived): the liveset's fresh members (Domains._fresh_members),
    # the grants and requests published (Lock._published_locks), the joiners
    _fresh: tuple[tuple[int, Report], ...] | None = field(init=False, default=None)
    _locks: tuple[dict[int, int | None], frozenset[int]] | None = field(init=False,
                                                                        default=None)
    _joining: HostSet | None = field(init=False, default=None)
    _twins_of: HostSet | None = field(init=False, default=None)  # _is_liveset: my liveset
    _twins: dict[int, HostSet] = field(init=False, default_factory=dict)  # ... sets equal to it
    # evaluation and publishing
    _seq: int = field(init=False, default=0)
    _next_beat: float = field(init=False, default=NEVER)
    _next_io: float = field(init=False, default=NEVER)
    _io_pending: int = field(init=False, default=0)
    _write_issued: tuple[int, float] = field(init=False, default=(-1, NEVER))  # seq, when
    _sr_vouched: float = field(init=False, default=NEVER)  # issued, then read back: my lease
    _out: list[Output] = field(init=False, default_factory=list)
    # fault handler
    _fault_start: float = field(init=False, default=NEVER)
    _last_decision: float = field(init=False, default=NEVER)
    _episodes: int = field(init=False, default=0)
    _episodes_decided: dict[int, int] = field(init=False, default_factory=dict)
    _views_key: object = field(init=False, default=None)
    _views_changed: float = field(init=False, default=NEVER)
    _proposal: HostSet | None = field(init=False, default=None)
    # the last decision's rule and views, for the commit's Evidence
    _decided: tuple[str, tuple[HostView, ...], float] | None = field(init=False, default=None)
    # membership
    _armed_at: float = field(init=False, default=NEVER)  # when I last armed
    _starting_until: float = field(init=False, default=NEVER)  # HA enable's grace ends
    _join_acks: HostSet = field(init=False, default=EMPTY)
    _acked_by: HostSet = field(init=False, default=EMPTY)
    _removed: set[int] = field(init=False, default_factory=set)
    _cold_side: HostSet | None = field(init=False, default=None)
    _cold_since: float = field(init=False, default=NEVER)
    _cold: ColdWatch = field(init=False, default_factory=ColdWatch)
    # master lock
    _grant: int | None = field(init=False, default=None)
    # waiting
    _waits_key: tuple[tuple[int | None, str], ...] = field(init=False, default=())

    @property
    def armed(self) -> bool:
        return self.phase.armed

    @property
    def master_hint(self) -> int | None:
        """The host this node grants the master lock to: the master, once settled."""
        return self._grant

    @property
    def proposal(self) -> HostSet | None:
        """The liveset I propose while PROPOSED (my fence request), else None."""
        return self._proposal

    def _set_phase(self, new: Phase, trigger: Trigger, why: str) -> None:
        """The one way to change phase: ``trigger`` must allow the edge
        (:data:`hacluster.core.phases.TRANSITIONS`), or this raises."""
        phases.check_transition(self.phase, new, trigger, why)
        if new is not self.phase:
            self._out.append(PhaseChanged(self.phase, new, why))
            self.phase = new

    def _fence(self, reason: str, trigger: Trigger) -> None:
        """Fence: the phase, the master lock given up, the effect."""
        self._set_phase(Phase.FENCED, trigger, reason)
        if self.is_master:
            self.is_master = False
            self._out.append(MasterLost("fenced"))
        self._out.append(Fence(reason))

    def _settle(self) -> float:
        return 2 * max(self.timing.t1, self.timing.t2)

    def _requesting(self) -> bool:
        return self.armed and not self.rule2

    def _forget_derived(self) -> None:
        """A peer, the liveset or the time changed: what was derived from them is stale."""
        self._fresh = self._locks = self._joining = None

    def _is_liveset(self, hosts: HostSet) -> bool:
        """Whether ``hosts`` equals my liveset; each set object found equal is
        remembered until my liveset changes, so that the livesets peers report
        are compared element by element once, not every step."""
        mine = self.liveset
        if hosts is mine:
            return True
        if self._twins_of is not mine:
            self._twins_of, self._twins = mine, {}
        if self._twins.get(id(hosts)) is hosts:
            return True
        if hosts != mine:
            return False
        if len(self._twins) >= 4 * self.config.hosts:
            self._twins.clear()
        self._twins[id(hosts)] = hosts  # kept alive here: its id stays its own
        return True

    def _others(self) -> HostSet:
        return self.members - {self.me}
