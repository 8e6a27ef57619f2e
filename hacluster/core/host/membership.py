"""Membership: arming, joining, admitting, cold start, clean shutdown, and
every change of the liveset.

Rules:

* **Commits.** A committed liveset forgets its removed hosts (what comes
  back of them is a later boot, met afresh) and stops vouching for them
  until they are admitted again. Arming (HA enable, joining, cold start)
  counts every member as seen now, and every other host as removed: a host
  that joined after the pool removed one must not vouch for its next boot
  to a member still waiting to see the old boot gone; nor for a new host.
* **Joining.** A host outside the liveset pets its watchdogs from its first
  step and announces itself. Members ack it once it is in their domains, no
  longer in their liveset and votes for their master (in a fault handler,
  only if they admitted it and it has not armed yet); when every member acks,
  members add it and it adopts their liveset, from a member that acked it
  and that it hears or sees writing now (so a listing admits this boot, never
  the incarnation that fenced, and a dead boot's slot admits nobody). A
  member also admits an armed host another member lists and that it hears
  (catch-up).
* **Epochs.** Every commit takes the next epoch (above every epoch I have
  seen); HA enable arms at epoch 1; a joiner adopts the epoch of the member
  whose liveset it adopts (:mod:`hacluster.core.coldstart`).
* **Cold start** (clustered mode): with no armed host anywhere, joining hosts
  form the pool once at least ``n/2 + 1`` of them all report hearing exactly
  the same set for two beats.
* **Cold start** (statefile mode, after every host went down): a joiner
  keeps the newest committed liveset recorded on the SR or relayed by other
  joiners (my own last boot's slot included); it forms the pool with exactly
  that liveset's hosts still members, at the next epoch, once
  :func:`hacluster.core.coldstart.missing` finds none of them missing, it
  has statefile access, and it has watched the SR for the proof window with
  no news of an armed host on either channel (a stall starts the watch
  again), all for two beats.
* **Clean shutdown** publishes ``excluded`` on both channels and disarms;
  members drop such a host without a fence window, and it counts as absent
  for survival rule 2.
* **Members** are the pool's hosts within the generation's index space: only
  their reports count, heartbeats go to them, and a clustered pool's quorum
  is counted over them. A change (a join or an eject, from the SR's member
  table) starts an added host afresh. A removed host I do not list is
  forgotten at once; one still in my liveset stays a member until a commit
  removes it (its clean shutdown, or the fault handler with its fence
  window): an eject never removes a live host without a fence. A joiner
  that finds itself removed leaves as in a clean shutdown; an armed host
  fences (an eject normally follows its clean shutdown, so whoever still
  lists it can only remove it with the fence window).
"""

from __future__ import annotations

from collections.abc import Iterator

from hacluster.core import coldstart, survival
from hacluster.core.events import (
    Disarmed,
    Evidence,
    LivesetCommitted,
    MasterLost,
    SendHeartbeat,
    Wait,
    WriteSlot,
)
from hacluster.core.host.lock import Lock
from hacluster.core.host.reports import Reports
from hacluster.core.host.state import NEVER, Peer
from hacluster.core.messages import EMPTY, HostSet, Phase, Report
from hacluster.core.phases import Trigger


class Membership(Lock, Reports):
    """The liveset: who is in, who joins, who leaves."""

    def _commit(self, liveset: HostSet, removed: HostSet, added: HostSet,
                excluded: HostSet = EMPTY, evidence: Evidence | None = None) -> None:
        self.epoch = self._next_epoch()
        self.liveset = liveset
        self._forget_derived()
        self._proposal = None
        for x in removed:
            self.peers[x] = Peer()
        self._removed = (self._removed | removed) - added
        self._out.append(LivesetCommitted(liveset, removed, added, excluded, evidence))
        if removed & (self.members - self._wanted):
            self._settle_members()

    def _change_members(self, members: HostSet) -> bool:
        """The member table changed: start added hosts afresh and forget removed
        ones I no longer list. Returns whether I am still a member."""
        members = frozenset(p for p in members if 0 <= p < self.config.hosts)
        self._forget_derived()
        for p in members - self.members:
            self.peers[p] = Peer()
            if self.liveset is not None:
                self._removed.add(p)  # a joiner: vouched for once admitted
        self._wanted = members
        if self.me not in members:
            return False
        self._settle_members()
        return True

    def _settle_members(self) -> None:
        """Members are the wanted ones plus any removed host my liveset still lists."""
        kept = self._wanted | (self.members & (self.liveset or EMPTY))
        self._forget_derived()
        for p in self.members - kept:
            self.peers[p] = Peer()
            self._removed.discard(p)
        self.members = kept

    def _held_reports(self) -> Iterator[Report | None]:
        for peer in self.peers:
            yield peer.report
            yield peer.slot_report

    def _next_epoch(self) -> int:
        return coldstart.next_epoch(max(self.epoch, self._cold.newest.epoch),
                                    self._held_reports())

    def _arm(self, liveset: HostSet, trigger: Trigger, epoch: int = 1) -> None:
        """Become a member with ``liveset`` at ``epoch``; every member starts fresh,
        and every other host counts as removed (the pool removed it, or it has yet
        to join)."""
        self.liveset = frozenset(liveset)
        self._forget_derived()
        self.epoch = epoch
        self._armed_at = self.now
        if trigger is Trigger.HA_ENABLE:
            self._starting_until = self.now + self.timing.enable_grace
        self._removed = set(self.members - self.liveset)
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
        if self._joining is not None:
            return self._joining
        found = set()
        liveset, now, fresh_for = self.liveset, self.now, self._fresh_for
        for index, peer in enumerate(self.peers):
            r = peer.report  # _fresh_report, inlined: this runs for every peer every step
            if (
                r is not None
                and r.joining
                and not now - peer.report_at >= fresh_for
                and (index not in liveset or r.boot == peer.pinned_boot)
            ):
                found.add(index)
        self._joining = frozenset(found)
        return self._joining

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
            if not self._is_liveset(report.liveset):  # the common case: nothing to catch up
                listed |= report.liveset
        return frozenset(j for j in (listed & need) - self.liveset
                         if (r := self._fresh_report(j)) is not None
                         and r.phase is Phase.NORMAL)

    def _pin_current_boot(self, p: int) -> None:
        """Only the incarnation of ``p`` I know now counts as the member."""
        known = self.peers[p].report
        self.peers[p].pinned_boot = known.boot if known is not None else None
        self._forget_derived()

    def _try_join(self) -> None:
        """Joining: adopt a member's liveset once it lists me after acking me.

        A member acks only a joiner outside its liveset, so a listing that
        follows an ack admits this boot, never the incarnation that fenced. An
        ack names an index, not a boot: only a member I hear or see writing
        now counts, never a slot a dead boot left behind, which may still list
        and ack my previous boot (a power cut right after I joined).
        """
        for index in sorted(self.members):
            r = self._fresh_report(index)
            if (index == self.me or r is None or r.phase not in (Phase.NORMAL, Phase.PROPOSED)
                    or not self._seen_alive(index)):
                continue
            if self.me in r.join_acks:
                self._acked_by |= {index}
            if self.me in r.liveset and index in self._acked_by:
                for p in r.liveset - {self.me}:
                    self._pin_current_boot(p)
                self._arm(r.liveset, Trigger.JOIN, max(self._cold.newest.epoch, r.epoch))
                self._out.append(LivesetCommitted(r.liveset, EMPTY, frozenset({self.me})))
                return

    def _try_cold_start(self) -> None:
        """No pool yet: form one once the side the rule of my mode names has
        held for two beats (what a paused joiner finds queued on waking is
        stale: the pool may have formed without it meanwhile)."""
        if self.statefile_mode:
            self._watch_for_cold_start()
            side = self._statefile_cold_start_side()
        else:
            side = self._cold_start_side()
        if side is None or side != self._cold_side:
            self._cold_side, self._cold_since = side, self.now
            return
        if self.now - self._cold_since >= self._settle():
            self._form_pool(side)

    def _form_pool(self, side: HostSet) -> None:
        self._arm(side, Trigger.COLD_START, self._next_epoch())
        self._out.append(LivesetCommitted(side, EMPTY, side))

    def _watch_for_cold_start(self) -> None:
        """Statefile mode, joining: learn the newest committed liveset from every
        report I hold (my last boot's slot included) and note news of armed hosts."""
        watch = self._cold
        if self.now - watch.last_step > self.timing.stall_limit:
            watch.watching_since = NEVER  # stalled: what I watched meanwhile is stale
        watch.last_step = self.now
        if watch.watching_since == NEVER and self.peers[self.me].slot_stamp is not None:
            watch.watching_since = self.now  # I have read the slots
        previous = self.previous
        if previous is not None and previous.generation == self.config.generation:
            watch.newest = watch.newest.merge(coldstart.recorded(previous))
        watch.newest = coldstart.newest(self._held_reports(), watch.newest)
        for index, peer in enumerate(self.peers):
            if index != self.me and peer.report is not None and peer.report.phase.armed:
                watch.armed_news = max(watch.armed_news, peer.report_at)

    def _statefile_cold_start_side(self) -> HostSet | None:
        """The set a statefile-mode cold start would form now: the newest liveset's
        hosts that are still members, if nothing keeps it from forming."""
        return None if self._cold_start_waits() else self._cold_start_hosts()

    def _cold_start_hosts(self) -> HostSet:
        return self._cold.newest.liveset & self.members

    def _cold_start_waits(self) -> list[Wait]:
        """What keeps a statefile-mode cold start from forming now (empty: nothing)."""
        newest = self._cold.newest
        if not self.statefile_access:
            return [Wait(None, "cold-statefile", "join waits for an armed host: none heard; "
                         "a cold start waits for statefile access (my slot does not change "
                         "when I read it back)")]
        if not newest.liveset:
            return [Wait(None, "cold-nothing", "cold start: the SR records no committed "
                         "liveset of this pool (a pool with no armed host is armed by "
                         "pool-ha-enable)")]
        hosts = self._cold_start_hosts()
        if self.me not in hosts:
            return [Wait(None, "cold-not-mine", f"cold start: I am not in the last liveset "
                         f"{newest}; its hosts form the pool, then I join")]
        fresh = {p: r for p in self.members
                 if p != self.me and (r := self._fresh_report(p)) is not None}
        waits = [Wait(p, "cold-host", f"cold start waits for host {p} of the last liveset "
                      f"{newest} recorded on the SR: {why}")
                 for p, why in coldstart.missing(self.me, newest, hosts, fresh, self.hbdomain,
                                                 self.sfdomain).items()]
        quiet = self.now - self._cold.quiet_since()
        if quiet < self.timing.proof_window:
            waits.append(Wait(None, "cold-quiet", (
                f"cold start waits {self.timing.proof_window - quiet:.1f}s more with no "
                "news of an armed host (an earlier incarnation may still run)")))
        return waits

    def _cold_start_side(self) -> HostSet | None:
        """The set a cold start would form now, if the rule holds."""
        fresh = {p: r for p in self.members
                 if p != self.me and (r := self._fresh_report(p)) is not None}
        if any(r.phase not in (Phase.JOINING, Phase.FENCED, Phase.EXCLUDED)
               for r in fresh.values()):
            return None  # a pool exists: join it instead
        side = self.hbdomain
        if len(side) < survival.cold_start_quorum(len(self.members)):
            return None
        if all(p in fresh and fresh[p].joining and fresh[p].hbdomain == side
               for p in side - {self.me}):
            return side
        return None

    def _shutdown(self, why: str = "clean shutdown") -> None:
        if self.is_master:
            self.is_master = False
            self._out.append(MasterLost(why))
        self._set_phase(Phase.EXCLUDED, Trigger.SHUTDOWN, why)
        report = self._report()
        self._out.append(SendHeartbeat(report, self._others()))
        if self.statefile_mode:
            self._out.append(WriteSlot(report))
        self._out.append(Disarmed(why))
