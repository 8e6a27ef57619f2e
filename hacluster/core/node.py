"""One host's liveness state machine: domains, fault handler, liveset, master lock.

Rules (the design is explained in docs/design.md):

* **Domains.** A liveset member is in my hbdomain while I accepted a heartbeat
  of its pinned boot within T1 and its latest report shows it heard me within
  T1 (one-way links count as broken). It is in my sfdomain while its slot's ``(boot, seq)``
  changed within T2 on my clock. I am in my own sfdomain while my own slot keeps
  changing when I read it back: that is my statefile access.
* **Fault handler.** When a liveset member leaves a domain I need (both in
  statefile mode, the network otherwise), or a fresh report of a member shows
  it handling a fault over my liveset (an episode newer than the one I saw
  when I last decided), I stop petting my watchdogs and:
  STABILIZING until every peer is fresh or timed out (survival rule 1 may decide
  here); AGREEING while views are exchanged, until every reachable member agrees
  and views settle, at most ``agree`` after the fault began; then decide
  (:mod:`hacluster.core.survival`). Losing fences at once. Winning publishes
  the proposal (the fence request), resumes petting and commits
  ``liveset & proposal`` once every removed host has been invisible on both
  channels, to me and to every member of the proposal (by the ages in their
  reports), for ``min(T1, T2) + fence_window``, or its pinned boot reported
  itself fenced (last words outlive a later boot's reports), and the fence
  request has had ``fence_request_reach`` to arrive.
* **Sightings vouched for.** My reports give sighting ages only of hosts I
  have not removed (until I admit them again): what I see of a removed host
  is a later boot, which members still holding the removed one must not take
  for it.
* **Stalls.** An armed core that was not run for ``stall_limit`` fences
  itself on waking, before looking at anything that queued meanwhile.
* **Fence requests.** A member whose latest report proposes a liveset without
  me, over a liveset with me, makes me fence at once.
* **Joining.** A host outside the liveset pets its watchdogs from its first
  step (before its first report) and announces itself. Members ack it
  once it is in their domains and no longer in their liveset (in a fault
  handler, only if they admitted it and it has not armed yet); when every
  member acks, members add it and it adopts their liveset. A member also
  admits an armed host another member lists and that it hears (catch-up).
* **Quorum of the proposal** (clustered mode): a winner whose proposal,
  once intersected with the other winners', is no longer quorate fences
  itself instead of proposing.
* **Cold start** (clustered mode): with no armed host anywhere, joining hosts
  form the pool once at least ``n/2 + 1`` of them all report hearing exactly
  the same set for two beats; statefile-mode pools are armed by the HA
  enable instead.
* **Clean shutdown** publishes ``excluded``; members drop such a host without
  a fence window, and it counts as absent for survival rule 2.
* **Waiting.** :meth:`HostCore.waits` says what my progress waits on (a
  PROPOSED commit, a join, an admission); every beat, a change of the hosts
  or evidence waited for is output as :class:`Waiting`.
* Only reports of this pool's generation and of a member's pinned boot count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import Enum

from hacluster.core import masterlock, phases, survival
from hacluster.core.events import (
    Disarmed,
    Fence,
    HeartbeatReceived,
    Input,
    LivesetCommitted,
    MasterGained,
    MasterLost,
    Output,
    PetWatchdog,
    PhaseChanged,
    ReadSlots,
    SendHeartbeat,
    Shutdown,
    SlotCorrupt,
    SlotsRead,
    SlotWritten,
    Suspect,
    Wait,
    Waiting,
    Wakeup,
    Watchdog,
    WriteSlot,
)
from hacluster.core.messages import EMPTY, HostSet, Phase, Report
from hacluster.core.phases import Trigger
from hacluster.core.timing import Timing

NEVER = -math.inf


class Mode(Enum):
    STATEFILE = "statefile"
    CLUSTERED = "clustered"


@dataclass(frozen=True)
class CoreConfig:
    timing: Timing
    hosts: int
    generation: int
    mode: Mode = Mode.STATEFILE

    def __post_init__(self) -> None:
        if self.hosts < 1:
            raise ValueError(f"a pool needs at least one host, got {self.hosts}")


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
class HostCore:
    """The pure liveness core of host ``me``; feed it inputs with :meth:`handle`."""

    config: CoreConfig
    me: int
    boot: int
    now: float
    liveset: HostSet | None = None  # None: joining
    phase: Phase = Phase.JOINING
    rule2: bool = False
    is_master: bool = False
    counters: Counters = field(default_factory=Counters)
    peers: list[Peer] = field(init=False)
    hbdomain: HostSet = field(init=False, default=EMPTY)
    sfdomain: HostSet = field(init=False, default=EMPTY)
    _seq: int = field(init=False, default=0)
    _next_beat: float = field(init=False, default=NEVER)
    _next_io: float = field(init=False, default=NEVER)
    _io_pending: int = field(init=False, default=0)
    _fault_start: float = field(init=False, default=NEVER)
    _last_decision: float = field(init=False, default=NEVER)
    _episodes: int = field(init=False, default=0)
    _episodes_decided: dict[int, int] = field(init=False, default_factory=dict)
    _views_key: object = field(init=False, default=None)
    _views_changed: float = field(init=False, default=NEVER)
    _proposal: HostSet | None = field(init=False, default=None)
    _join_acks: HostSet = field(init=False, default=EMPTY)
    _grant: int | None = field(init=False, default=None)
    _acked_by: HostSet = field(init=False, default=EMPTY)
    _removed: set[int] = field(init=False, default_factory=set)
    _waits_key: tuple[tuple[int | None, str], ...] = field(init=False, default=())
    _cold_side: HostSet | None = field(init=False, default=None)
    _cold_since: float = field(init=False, default=NEVER)
    _suspected: set[tuple[int, str]] = field(init=False, default_factory=set)
    _out: list[Output] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not 0 <= self.me < self.config.hosts:
            raise ValueError(f"host index {self.me} outside 0..{self.config.hosts - 1}")
        self.peers = [Peer() for _ in range(self.config.hosts)]
        self.peers[self.me].pinned_boot = self.boot
        if self.liveset is not None:
            self._arm(self.liveset, Trigger.HA_ENABLE)
        self._next_beat = self.now
        self._next_io = self.now

    # ------------------------------------------------------------ public
    @property
    def timing(self) -> Timing:
        return self.config.timing

    @property
    def statefile_mode(self) -> bool:
        return self.config.mode is Mode.STATEFILE

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

    def handle(self, event: Input) -> list[Output]:
        """Consume one input; return the outputs, ending with a :class:`Wakeup`.

        Raises :class:`hacluster.core.phases.IllegalTransition` or
        :class:`~hacluster.core.phases.InvariantViolation` if the core broke
        its own state machine (:mod:`hacluster.core.phases`)."""
        out = self._handle(event)
        phases.check_invariants(self)
        return out

    def _handle(self, event: Input) -> list[Output]:
        if self.phase in (Phase.FENCED, Phase.EXCLUDED):
            return [Wakeup(math.inf)]
        stalled = event.now - self.now
        self.now = max(self.now, event.now)
        self._out = []
        if self.armed and stalled > self.timing.stall_limit:
            self._fence(f"daemon stalled for {stalled:.2f}s: peers may have removed me",
                        Trigger.STALL)
            return [*self._out, Wakeup(math.inf)]
        interesting = True
        if isinstance(event, HeartbeatReceived):
            interesting = self._on_heartbeat(event.report)
        elif isinstance(event, SlotWritten):
            self._io_pending -= 1
            if not event.ok:
                self.counters.write_errors += 1
        elif isinstance(event, SlotsRead):
            self._io_pending -= 1
            self._on_slots(event)
        elif isinstance(event, Shutdown):
            self._shutdown()
            return [*self._out, Wakeup(math.inf)]
        if interesting or self.now >= self._next_eval():
            self._step()
        out = self._out
        out.append(Wakeup(self._next_eval() if self.phase not in (Phase.FENCED,) else math.inf))
        return out

    # ------------------------------------------------------------ inputs
    def _accept(self, report: Report) -> Peer | None:
        if report.generation != self.config.generation:
            self.counters.wrong_generation += 1
            return None
        if not 0 <= report.sender < self.config.hosts:
            self.counters.foreign_sender += 1
            return None
        return self.peers[report.sender]

    def _remember(self, peer: Peer, report: Report) -> None:
        if report.phase is Phase.FENCED:
            # last words outlive the reports of a later boot: they prove this boot dead
            peer.fenced_boot = report.boot
        if peer.report is None or report.stamp > peer.report.stamp:
            peer.report = report
            peer.report_at = self.now

    def _on_heartbeat(self, report: Report) -> bool:
        peer = self._accept(report)
        if peer is None or report.sender == self.me:
            if peer is not None:
                self.counters.foreign_sender += 1
            return False
        if report.stamp <= peer.net_stamp:
            self.counters.stale += 1
            return False
        previous = peer.report
        peer.net_stamp = report.stamp
        if self._counts_for(peer, report):
            peer.last_net = self.now
        self._remember(peer, report)
        return previous is None or _notable_change(previous, report)

    def _on_slots(self, event: SlotsRead) -> None:
        if event.slots is None:
            self.counters.read_errors += 1
            return
        for index, content in event.slots.items():
            if content is None:
                continue
            if isinstance(content, SlotCorrupt):
                self.counters.corrupt_slots += 1
                continue
            peer = self._accept(content)
            if peer is None:
                continue
            if content.sender != index:
                self.counters.foreign_sender += 1
                continue
            if peer.slot_stamp is not None and content.stamp != peer.slot_stamp and (
                self._counts_for(peer, content)
            ):
                peer.slot_changed = self.now
            peer.slot_stamp = content.stamp
            peer.slot_report = content
            self._remember(peer, content)

    def _counts_for(self, peer: Peer, report: Report) -> bool:
        """Whether a report proves liveness: of the pinned boot, pinned at first sight.

        A member's pin holds (its replacement incarnation is not the member);
        a non-member's moves up to a newer boot, so that a dead boot's late
        last words never stop the host's next boot from joining."""
        member = self.liveset is not None and report.sender in self.liveset
        if peer.pinned_boot is None or (not member and report.boot > peer.pinned_boot):
            peer.pinned_boot = report.boot
        return report.boot == peer.pinned_boot

    # ------------------------------------------------------------ evaluation
    def _next_eval(self) -> float:
        at = min(self._next_beat, self.now + self.timing.tick)
        if self.statefile_mode and self._io_pending == 0:
            at = min(at, max(self._next_io, self.now))
        return at

    def _step(self) -> None:
        now = self.now
        self._compute_domains()
        if self.phase is Phase.JOINING:
            self._try_join()
            if self.phase is Phase.JOINING and not self.statefile_mode:
                self._try_cold_start()
        else:
            self._track_suspects()
            self._drop_excluded_members()
            if self.armed:
                self._obey_fence_requests()
            if self.armed:
                self._run_fault_handler()
            if self.armed:
                self._admit_joiners()
        if self.phase is Phase.FENCED:
            return
        self._update_lock()
        if now >= self._next_beat:
            self._next_beat = now + self.timing.t1
            self._publish_waits()  # once a beat, not once a packet: it is for people
            self._pet()
            self._publish_heartbeat()
        if self.statefile_mode and now >= self._next_io and self._io_pending == 0:
            self._next_io = now + self.timing.t2
            self._io_pending = 2
            self._out.append(WriteSlot(self._report()))
            self._out.append(ReadSlots())

    def _compute_domains(self) -> None:
        t = self.timing
        hb = {self.me}
        sf: set[int] = set()
        for index, peer in enumerate(self.peers):
            if index != self.me and self.now - peer.last_net < t.T1:
                report = peer.report
                # one-way links: a peer whose report lacks me is not in my hbdomain
                # (no report yet, or a joiner's, cannot have heard me: grace)
                if report is None or report.joining or self._hears_me(report):
                    hb.add(index)
            if self.now - peer.slot_changed < t.T2:
                sf.add(index)
        self.hbdomain = frozenset(hb)
        self.sfdomain = frozenset(sf)

    def _hears_me(self, report: Report) -> bool:
        """Whether a peer's report shows it accepted a heartbeat of mine within T1.

        Its own sighting age of me says so, not its hbdomain alone: two hosts
        that both dropped each other would otherwise never take each other back
        (each waits for the other's hbdomain to list it first)."""
        ages = report.hb_age_ms
        heard = self.me < len(ages) and 0 <= ages[self.me] < self.timing.T1 * 1000
        return heard or self.me in report.hbdomain

    @property
    def statefile_access(self) -> bool:
        return self.me in self.sfdomain

    def _missing(self) -> HostSet:
        """Liveset members absent from a domain this mode relies on."""
        assert self.liveset is not None
        need = self.hbdomain
        if self.statefile_mode and not self.rule2:
            need = need & self.sfdomain
        return self.liveset - need

    def _track_suspects(self) -> None:
        if self.liveset is None:
            return
        current = {(p, "network") for p in self.liveset - self.hbdomain}
        if self.statefile_mode:
            current |= {(p, "statefile") for p in self.liveset - self.sfdomain}
        for host, channel in sorted(current - self._suspected):
            self._out.append(Suspect(host, channel))
        self._suspected = current

    def _set_phase(self, new: Phase, trigger: Trigger, why: str) -> None:
        """The one way to change phase: ``trigger`` must allow the edge
        (:data:`hacluster.core.phases.TRANSITIONS`), or this raises."""
        phases.check_transition(self.phase, new, trigger, why)
        if new is not self.phase:
            self._out.append(PhaseChanged(self.phase, new, why))
            self.phase = new

    def _fresh_report(self, p: int) -> Report | None:
        """Latest report of ``p``, of any boot, if received within min(T1, T2)."""
        peer = self.peers[p]
        if peer.report is None or self.now - peer.report_at >= min(self.timing.T1, self.timing.T2):
            return None
        return peer.report

    def _fresh_member_report(self, p: int) -> Report | None:
        """Latest report of liveset member ``p`` from its pinned boot, if recent."""
        report = self._fresh_report(p)
        if report is None or report.boot != self.peers[p].pinned_boot:
            return None
        return report

    # ------------------------------------------------------------ fencing
    def _fence(self, reason: str, trigger: Trigger) -> None:
        self._set_phase(Phase.FENCED, trigger, reason)
        if self.is_master:
            self.is_master = False
            self._out.append(MasterLost("fenced"))
        self._out.append(Fence(reason))

    def _fresh_members(self, among: HostSet | None = None) -> Iterator[tuple[int, Report]]:
        """Liveset members (or ``among``), but me, with a fresh report of their pinned boot."""
        assert self.liveset is not None
        for p in sorted((self.liveset if among is None else among) - {self.me}):
            report = self._fresh_member_report(p)
            if report is not None:
                yield p, report

    def _proposals(self) -> Iterator[tuple[int, HostSet, Report]]:
        """Members currently proposing a liveset: their proposal and report."""
        for p, report in self._fresh_members():
            if report.phase is Phase.PROPOSED and report.proposal is not None:
                yield p, report.proposal, report

    def _obey_fence_requests(self) -> None:
        for p, proposal, report in self._proposals():
            if self.me not in proposal and self.me in report.liveset:
                self._fence(f"fence request from host {p}", Trigger.FENCE_REQUEST)
                return

    # ------------------------------------------------------------ fault handler
    def _peer_in_fault(self) -> int | None:
        """A member handling a fault over my liveset that I have not decided on:
        a fault episode of its that I had seen when I last decided was the round
        I took part in (joining it again would chase it round after round)."""
        for p, report in self._fresh_members():
            if (
                report.phase.in_fault
                and report.liveset == self.liveset
                and report.fault_episode > self._episodes_decided.get(p, -1)
                and self.peers[p].report_at > self._last_decision + self._settle()
            ):
                return p
        return None

    def _settle(self) -> float:
        return 2 * max(self.timing.t1, self.timing.t2)

    def _run_fault_handler(self) -> None:
        assert self.liveset is not None
        missing = self._missing()
        if self.phase is Phase.NORMAL:
            if self.rule2:
                self._run_rule2(missing)
                return
            if missing:
                self._enter_fault(f"hosts {sorted(missing)} missing", Trigger.MEMBER_MISSING)
            elif (p := self._peer_in_fault()) is not None:
                self._enter_fault(f"host {p} is handling a fault", Trigger.PEER_IN_FAULT)
            return
        if self.phase is Phase.PROPOSED:
            assert self._proposal is not None
            if self._proposal & missing:
                self._enter_fault(f"hosts {sorted(self._proposal & missing)} missing in proposal",
                                  Trigger.PROPOSAL_MEMBER_MISSING)
            else:
                self._try_commit()
            return
        deadline = self._fault_start + self.timing.agree
        if self.phase is Phase.STABILIZING:
            if self._stable():
                mine = self._my_view()
                if (
                    self.statefile_mode
                    and survival.rule1_applies(self.me, self.liveset, mine)
                    and not self._peers_agreeing()
                ):
                    self._decide()
                    return
                self._set_phase(Phase.AGREEING, Trigger.VIEW_STABLE, "view stable")
            elif self.now >= deadline:
                self._set_phase(Phase.AGREEING, Trigger.AGREE_DEADLINE,
                                "view did not stabilise in time")
            else:
                return
        if self.phase is Phase.AGREEING and (self._agreed() or self.now >= deadline):
            self._decide()

    def _run_rule2(self, missing: HostSet) -> None:
        assert self.liveset is not None
        if missing:
            self._fence(f"hosts {sorted(missing)} failed in survival-rule-2 mode",
                        Trigger.RULE2_FAILURE)
        elif self.liveset <= self.sfdomain:
            self.rule2 = False
            self._set_phase(Phase.NORMAL, Trigger.RULE2_LEAVE,
                            "statefile back: leaving survival-rule-2 mode")

    def _enter_fault(self, why: str, trigger: Trigger) -> None:
        self._episodes += 1
        self._fault_start = self.now
        self._proposal = None
        self._views_key = None
        self._set_phase(Phase.STABILIZING, trigger, why)

    def _peers_agreeing(self) -> bool:
        """Whether a member is exchanging views about my liveset: join it, don't shortcut."""
        return any(report.phase.in_fault and report.liveset == self.liveset
                   for _, report in self._fresh_members())

    def _stable(self) -> bool:
        assert self.liveset is not None
        t = self.timing
        for p in self.liveset - {self.me}:
            peer = self.peers[p]
            for age, timeout in (
                (self.now - peer.last_net, t.T1),
                (self.now - peer.slot_changed, t.T2),
            ):
                if t.fresh <= age < timeout:
                    return False
        return True

    def _my_view(self) -> survival.View:
        return survival.View(self.hbdomain, self.sfdomain, self.statefile_access)

    def _views(self) -> dict[int, survival.View]:
        """My view plus the views of members that reported since the fault began."""
        assert self.liveset is not None
        views = {self.me: self._my_view()}
        for p, report in self._fresh_members():
            if self.peers[p].report_at >= self._fault_start:
                views[p] = survival.View(
                    report.hbdomain, report.sfdomain, report.statefile_access
                )
        return views

    def _agreed(self) -> bool:
        assert self.liveset is not None
        views = self._views()
        key = tuple(sorted((p, v.hbdomain & self.liveset, v.sfdomain & self.liveset,
                            v.statefile_access) for p, v in views.items()))
        if key != self._views_key:
            self._views_key = key
            self._views_changed = self.now
        reachable = (self.hbdomain | self.sfdomain) & self.liveset - {self.me}
        done = (Phase.AGREEING, Phase.PROPOSED, Phase.FENCED)
        answered = {p for p, report in self._fresh_members(reachable) if report.phase in done}
        if answered != reachable:
            return False
        return self.now - self._views_changed >= self._settle()

    def _decide(self) -> None:
        assert self.liveset is not None
        views = self._views()
        if self.statefile_mode:
            decision = survival.decide_statefile(self.me, self.liveset, views)
        else:
            decision = survival.decide_clustered(
                self.me, self.liveset, self.config.hosts, views
            )
        self._last_decision = self.now
        self._episodes_decided = {
            p: report.fault_episode for p, peer in enumerate(self.peers)
            if (report := peer.report) is not None and report.boot == peer.pinned_boot
            and report.phase.in_fault
        }
        if not decision.survive:
            self._fence(decision.rule, Trigger.LOST)
            return
        if decision.rule2:
            # rule 2 keeps exactly the hosts I hear: the whole liveset, since its
            # conditions leave out only excluded hosts, already gone from it
            self.rule2 = True
            if decision.liveset != self.liveset:
                removed = self.liveset - decision.liveset
                self._commit(decision.liveset & self.liveset, removed, EMPTY)
            self._set_phase(Phase.NORMAL, Trigger.RULE2_ENTER,
                            "survival rule 2: the whole pool lost the statefile")
            return
        if decision.liveset >= self.liveset:
            self._set_phase(Phase.NORMAL, Trigger.NOBODY_TO_REMOVE,
                            f"{decision.rule}: nobody to remove")
            return
        proposal = decision.liveset & self.liveset & self._peer_proposals()
        if not self.statefile_mode and not survival.quorate(proposal, self.liveset,
                                                            self.config.hosts):
            # merging disagreeing winners' proposals can leave fewer hosts than a
            # quorum: such a side must not hold the pool (it would let the fenced
            # rest form another one)
            self._fence(f"no quorum after merging proposals: {sorted(proposal)} of "
                        f"{self.config.hosts} hosts", Trigger.NO_QUORUM)
            return
        self._proposal = proposal
        self._set_phase(Phase.PROPOSED, Trigger.PROPOSE,
                        f"{decision.rule}: propose {sorted(self._proposal)}")
        self._try_commit()

    def _peer_proposals(self) -> HostSet:
        """Intersection of the fresh proposals of members that keep me (step 4)."""
        assert self.liveset is not None
        agreed = self.liveset
        for _, proposal, report in self._proposals():
            if report.liveset == self.liveset and self.me in proposal:
                agreed = agreed & proposal
        return agreed

    def _commit_waits(self) -> list[Wait]:
        """Removed hosts not yet provably fenced, each with the evidence awaited."""
        assert self.liveset is not None and self._proposal is not None
        t = self.timing
        window = min(t.T1, t.T2) + t.fence_window
        waits = []
        for x in sorted(self.liveset - self._proposal):
            if self._proved_fenced(x):
                continue
            seen, by = self._last_sighting(x)
            if self.now < seen + window:
                who = "me" if by is None else f"host {by}"
                waits.append(Wait(x, "sighting", (
                    f"commit waits for host {x}: last seen by {who} "
                    f"{self.now - seen:.1f}s ago, needs {window:.1f}s unseen "
                    f"or its own fence report")))
        reach = self._last_decision + t.fence_request_reach
        if waits or self.now >= reach:
            return waits
        return [Wait(x, "reach", f"commit waits {reach - self.now:.1f}s more for the fence "
                     f"request to reach host {x}") for x in sorted(self.liveset - self._proposal)]

    def _proved_fenced(self, x: int) -> bool:
        """Whether the member incarnation of ``x`` reported itself fenced: last
        words of another boot prove nothing of this one."""
        peer = self.peers[x]
        return peer.fenced_boot is not None and peer.fenced_boot == peer.pinned_boot

    def _last_sighting(self, x: int) -> tuple[float, int | None]:
        """When ``x`` was last seen alive by me (``None``) or, per their reports,
        by a member of my proposal (who may have heard it after I lost it)."""
        assert self._proposal is not None
        latest, by = self.peers[x].last_seen(), None
        for p, report in self._fresh_members(self._proposal):
            received = self.peers[p].report_at
            for ages in (report.hb_age_ms, report.sf_age_ms):
                if x < len(ages) and ages[x] >= 0 and received - ages[x] / 1000 > latest:
                    latest, by = received - ages[x] / 1000, p
        return latest, by

    def _try_commit(self) -> None:
        if self._commit_waits():
            return
        assert self.liveset is not None and self._proposal is not None
        removed = self.liveset - self._proposal
        self._commit(self._proposal, removed, EMPTY)
        self._set_phase(Phase.NORMAL, Trigger.COMMIT, f"committed liveset {sorted(self.liveset)}")

    def _commit(self, liveset: HostSet, removed: HostSet, added: HostSet,
                excluded: HostSet = EMPTY) -> None:
        self.liveset = liveset
        self._proposal = None
        for x in removed:
            self.peers[x] = Peer()
        self._removed = (self._removed | removed) - added
        self._out.append(LivesetCommitted(liveset, removed, added, excluded))

    # ------------------------------------------------------------ membership
    def _arm(self, liveset: HostSet, trigger: Trigger) -> None:
        """Become a member with ``liveset``; every member starts fresh."""
        self.liveset = frozenset(liveset)
        for p in self.liveset:
            self._count_as_fresh(p)
        self._set_phase(Phase.NORMAL, trigger, f"armed with liveset {sorted(self.liveset)}")

    def _count_as_fresh(self, p: int) -> None:
        """A new member starts seen now, on the channels this mode uses."""
        self.peers[p].last_net = self.now
        if self.statefile_mode:
            self.peers[p].slot_changed = self.now

    def _drop_excluded_members(self) -> None:
        assert self.liveset is not None
        gone = frozenset(p for p, report in self._fresh_members() if report.excluded)
        if gone:
            proposal = self._proposal
            self._commit(self.liveset - gone, gone, EMPTY, excluded=gone)
            if proposal is not None:
                self._proposal = proposal - gone

    def _joiners(self) -> HostSet:
        """Hosts announcing a join: outside my liveset, or admitted (this same
        boot) but not yet armed; never a member's incarnation that was replaced."""
        assert self.liveset is not None
        found = set()
        for index, peer in enumerate(self.peers):
            r = self._fresh_report(index)
            if (
                r is not None
                and r.joining
                and (index not in self.liveset or r.boot == peer.pinned_boot)
            ):
                found.add(index)
        return frozenset(found)

    def _admit_joiners(self) -> None:
        assert self.liveset is not None
        if self.phase is not Phase.NORMAL or self.rule2:
            # keep acking hosts I admitted that have not armed yet: armed, they
            # take part in the fault or obey its fence request; unarmed, they
            # would be waited for forever, alive but never fenced
            self._join_acks = self._admitted_unarmed()
            return
        need = self.hbdomain & self.sfdomain if self.statefile_mode else self.hbdomain
        grants, _ = self._published_locks()
        # a joiner must already vote for the lock holder I vote for, so that
        # admitting it never takes the lock away from the sitting master
        self._join_acks = frozenset(
            j for j in self._joiners() & need if grants.get(j) == self._grant
        )
        ready = set()
        for j in self._join_acks - self.liveset:
            acked = all(
                p == self.me
                or ((r := self._fresh_member_report(p)) is not None and j in r.join_acks)
                for p in self.liveset
            )
            if acked:
                ready.add(j)
        ready |= self._admitted_elsewhere(need)
        if ready:
            added = frozenset(ready)
            for j in added:
                self._pin_current_boot(j)
                self._count_as_fresh(j)
            self._commit(self.liveset | added, EMPTY, added)

    def _admitted_unarmed(self) -> HostSet:
        """Hosts I admitted (this boot of theirs) that still announce a join."""
        assert self.liveset is not None
        return self._joiners() & self.liveset

    def _admitted_elsewhere(self, need: HostSet) -> HostSet:
        """Armed hosts a member admitted while I still waited for an ack: members
        admit on the acks of their own livesets, which differ while several hosts
        join at once, and an armed host no longer announces a join. I catch up
        with an armed host a member lists and that I hear on every channel I
        need (two hosts admitted apart catch up with each other). Its lock vote
        does not matter here, unlike for an ack: the members that admitted it
        already count its vote, and a larger liveset only makes the lock harder
        to hold."""
        assert self.liveset is not None
        listed: set[int] = set()
        for _, report in self._fresh_members():
            if report.liveset != self.liveset:  # the common case: nothing to catch up
                listed |= report.liveset
        return frozenset(j for j in (listed & need) - self.liveset
                         if (r := self._fresh_report(j)) is not None
                         and r.phase is Phase.NORMAL)

    def _pin_current_boot(self, p: int) -> None:
        """Only the incarnation of ``p`` I know now counts as the member."""
        known = self.peers[p].report
        self.peers[p].pinned_boot = known.boot if known is not None else None

    def _try_join(self) -> None:
        """Joining: adopt a member's liveset once it lists me after acking me.

        A member acks only a joiner outside its liveset, so a listing that
        follows an ack admits this boot, never the incarnation that fenced.
        """
        for index in range(self.config.hosts):
            r = self._fresh_report(index)
            if index == self.me or r is None or r.phase not in (Phase.NORMAL, Phase.PROPOSED):
                continue
            if self.me in r.join_acks:
                self._acked_by |= {index}
            if self.me in r.liveset and index in self._acked_by:
                for p in r.liveset - {self.me}:
                    self._pin_current_boot(p)
                self._arm(r.liveset, Trigger.JOIN)
                self._out.append(LivesetCommitted(r.liveset, EMPTY, frozenset({self.me})))
                return

    def _try_cold_start(self) -> None:
        """Clustered mode, no pool yet: form one once a cold-start quorum of
        joining hosts all report hearing exactly the same set, mine included,
        for two beats (what a paused joiner finds queued on waking is stale:
        the pool may have formed without it meanwhile)."""
        side = self._cold_start_side()
        if side is None or side != self._cold_side:
            self._cold_side, self._cold_since = side, self.now
            return
        if self.now - self._cold_since >= self._settle():
            self._form_pool(side)

    def _form_pool(self, side: HostSet) -> None:
        self._arm(side, Trigger.COLD_START)
        self._out.append(LivesetCommitted(side, EMPTY, side))

    def _cold_start_side(self) -> HostSet | None:
        """The set a cold start would form now, if the rule holds."""
        fresh = {p: r for p in range(self.config.hosts)
                 if p != self.me and (r := self._fresh_report(p)) is not None}
        if any(r.phase not in (Phase.JOINING, Phase.FENCED, Phase.EXCLUDED)
               for r in fresh.values()):
            return None  # a pool exists: join it instead
        side = self.hbdomain
        if len(side) < survival.cold_start_quorum(self.config.hosts):
            return None
        if all(p in fresh and fresh[p].joining and fresh[p].hbdomain == side
               for p in side - {self.me}):
            return side
        return None

    def _shutdown(self) -> None:
        if self.is_master:
            self.is_master = False
            self._out.append(MasterLost("clean shutdown"))
        self._set_phase(Phase.EXCLUDED, Trigger.SHUTDOWN, "clean shutdown")
        report = self._report()
        self._out.append(SendHeartbeat(report, self._others()))
        if self.statefile_mode:
            self._out.append(WriteSlot(report))
        self._out.append(Disarmed("clean shutdown"))

    # ------------------------------------------------------------ master lock
    def _published_locks(self) -> tuple[dict[int, int | None], HostSet]:
        """Each host's latest grant and who requests: from slots in statefile mode
        (the lock lives on the statefile), from heartbeats in clustered mode."""
        grants: dict[int, int | None] = {}
        requesting = set()
        for index, peer in enumerate(self.peers):
            report = peer.slot_report if self.statefile_mode else peer.report
            if report is not None and report.boot == peer.pinned_boot:
                grants[index] = report.lock_grant
                if report.lock_request and index != self.me:
                    requesting.add(index)
        if not self.statefile_mode:
            grants[self.me] = self._grant
        if self._requesting():
            requesting.add(self.me)
        return grants, frozenset(requesting)

    def _update_lock(self) -> None:
        grants, requesting = self._published_locks()
        # a joiner votes with the liveset its members report, so that it
        # already grants the sitting master when it is admitted
        liveset = self.liveset if self.liveset is not None else self._members_liveset()
        self._grant = masterlock.choose_grant(liveset, requesting, grants)
        holds = (
            self._requesting()
            and self._grant == self.me
            and masterlock.holds_lock(self.me, liveset, grants)
        )
        if holds and not self.is_master:
            self.is_master = True
            self._out.append(MasterGained())
        elif not holds and self.is_master:
            self.is_master = False
            reason = "survival rule 2" if self.rule2 else "lock grants withdrawn"
            self._out.append(MasterLost(reason))

    def _members_liveset(self) -> HostSet:
        """The liveset in the freshest report of an armed peer (for joiners)."""
        armed = [
            (peer.report_at, peer.report.liveset) for peer in self.peers
            if peer.report is not None
            and peer.report.phase in (Phase.NORMAL, Phase.PROPOSED)
            and self.now - peer.report_at < self.timing.T1
        ]
        return max(armed, key=lambda seen: seen[0])[1] if armed else EMPTY

    def _requesting(self) -> bool:
        return self.armed and not self.rule2

    # ------------------------------------------------------------ waiting
    def waits(self) -> list[Wait]:
        """What my progress waits on: my commit while PROPOSED, my admission
        while JOINING, the admission of joiners while NORMAL."""
        if self.phase is Phase.PROPOSED:
            return self._commit_waits()
        if self.phase is Phase.JOINING:
            return self._join_waits()
        if self.phase is Phase.NORMAL and not self.rule2:
            return self._admission_waits()
        return []

    def _publish_waits(self) -> None:
        """Say what I wait on once per change of the hosts or evidence awaited."""
        waits = self.waits()
        key = tuple((w.on, w.reason) for w in waits)
        if key != self._waits_key:
            self._waits_key = key
            self._out.append(Waiting(tuple(waits)))

    def _join_waits(self) -> list[Wait]:
        """Which armed host I hear has not acknowledged me, and why (from its report)."""
        members = {p for p in range(self.config.hosts)
                   if p != self.me and (r := self._fresh_report(p)) is not None
                   and r.phase.armed}
        if not members:
            text = "join waits for an armed host: none heard"
            if self.statefile_mode:
                text += " (a pool with no armed host is armed by pool-ha-enable)"
            return [Wait(None, "members", text)]
        waits = []
        for m in sorted(members):
            report = self.peers[m].report
            assert report is not None
            if self.me in report.join_acks:
                waits.append(Wait(m, "acked", f"host {m} acked me: it waits for the acks "
                                  "of its other members before listing me"))
            elif not (self.me in report.liveset and m in self._acked_by):
                waits.append(Wait(m, "no-ack", f"no ack from host {m}: "
                                  + self._why_no_ack(report)))
        return waits

    def _why_no_ack(self, report: Report) -> str:
        """Why the member whose latest report is ``report`` does not ack me."""
        if report.phase is not Phase.NORMAL or report.rule2:
            state = "survival-rule-2 mode" if report.rule2 else report.phase.name
            return f"it is in {state} (members ack joiners in NORMAL)"
        if self.me not in report.hbdomain:
            return "it does not hear my heartbeats"
        if self.statefile_mode and self.me not in report.sfdomain:
            return "it does not see my slot change"
        if report.lock_grant != self._grant:
            return (f"it votes host {report.lock_grant} for master, I vote host "
                    f"{self._grant}")
        return "none in its latest report yet"

    def _admission_waits(self) -> list[Wait]:
        """Joiners I hear that are not admitted yet, and whose ack they wait for."""
        assert self.liveset is not None
        waits = []
        for j in sorted(self._joiners() - self.liveset):
            if j not in self._join_acks:
                waits.append(Wait(j, "my-ack", f"not acking host {j}: "
                                  + self._why_not_acking(j)))
                continue
            missing = [p for p in sorted(self.liveset - {self.me})
                       if (r := self._fresh_member_report(p)) is None or j not in r.join_acks]
            if missing:
                waits.append(Wait(j, "acks", f"admitting host {j} waits for the acks of "
                                  f"hosts {missing}"))
        return waits

    def _why_not_acking(self, j: int) -> str:
        if j not in self.hbdomain:
            return "I do not hear its heartbeats"
        if self.statefile_mode and j not in self.sfdomain:
            return "I do not see its slot change"
        grants, _ = self._published_locks()
        return f"it votes host {grants.get(j)} for master, I vote host {self._grant}"

    # ------------------------------------------------------------ publishing
    def _others(self) -> HostSet:
        return frozenset(range(self.config.hosts)) - {self.me}

    def _pet(self) -> None:
        # a joiner pets from its first step, before its first report, so that no
        # member can admit it (and give it work) before its watchdog runs
        if self.phase not in (Phase.NORMAL, Phase.PROPOSED, Phase.JOINING):
            return
        t = self.timing
        self._out.append(PetWatchdog(Watchdog.HEARTBEAT, t.Wh))
        if self.statefile_mode and (self.statefile_access or self.rule2):
            self._out.append(PetWatchdog(Watchdog.STATEFILE, t.Ws))

    def _publish_heartbeat(self) -> None:
        self._out.append(SendHeartbeat(self._report(), self._others()))

    def _ages(self, attr: str) -> tuple[int, ...]:
        """Sightings I vouch for: none of a host I removed until I admit it again
        (what I see of it meanwhile is a later boot, which members still holding
        the removed boot must not take for it)."""
        ages = []
        for index, peer in enumerate(self.peers):
            seen: float = getattr(peer, attr)
            vouched = seen != NEVER and self._vouches_for(index)
            ages.append(int((self.now - seen) * 1000) if vouched else -1)
        return tuple(ages)

    def _vouches_for(self, index: int) -> bool:
        return index not in self._removed

    def _report(self) -> Report:
        self._seq += 1
        return Report(
            generation=self.config.generation,
            sender=self.me,
            boot=self.boot,
            seq=self._seq,
            phase=self.phase,
            liveset=self.liveset or EMPTY,
            hbdomain=self.hbdomain,
            sfdomain=self.sfdomain,
            statefile_access=self.statefile_access,
            proposal=self._proposal if self.phase is Phase.PROPOSED else None,
            rule2=self.rule2,
            joining=self.phase is Phase.JOINING,
            excluded=self.phase is Phase.EXCLUDED,
            statefile_corrupted=self.counters.corrupt_slots > 0,
            lock_request=self._requesting(),
            lock_grant=self._grant,
            join_acks=self._join_acks,
            fault_episode=self._episodes,
            hb_age_ms=self._ages("last_net"),
            sf_age_ms=self._ages("slot_changed"),
        )

    def fenced_report(self) -> Report:
        """The last words of a fenced host, written after its workloads died."""
        return replace(self._report(), phase=Phase.FENCED, proposal=None)


def _notable_change(old: Report, new: Report) -> bool:
    """Whether a new report warrants evaluating now rather than at the next tick."""
    return (
        old.phase is not new.phase
        or old.liveset != new.liveset
        or old.proposal != new.proposal
        or old.excluded != new.excluded
        or old.join_acks != new.join_acks
        or old.hbdomain != new.hbdomain
    )
