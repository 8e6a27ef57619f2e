"""The fault handler: from a member missing to a committed liveset, or a fence.

Rules:

* **Entering.** When a liveset member leaves a domain I need (both in
  statefile mode, the network otherwise), or a fresh report of a member shows
  it handling a fault over my liveset (an episode newer than the one I saw
  when I last decided) that is its own (its report misses a member from a
  domain it needs) or a proposal, I enter STABILIZING (my lease goes on only while the
  evidence survivors share still vouches for me: :mod:`hacluster.core.host.reports`).
* STABILIZING lasts until every peer is fresh or timed out; survival rule 1
  may decide there (statefile mode, nobody exchanging views). AGREEING lasts
  while views are exchanged, until every reachable member agrees (or has
  already committed a change of my liveset) and views settle, at most
  ``agree`` after the fault began; then I decide
  (:mod:`hacluster.core.survival`).
* Losing fences at once. Winning publishes the proposal (the fence request),
  commits ``liveset & proposal`` once every removed host
  has been invisible on both channels, to me and to every member of the
  proposal (by the ages in their reports), for ``min(T1, T2) +
  fence_window``, or its pinned boot reported itself fenced. (Its lease ran
  out by then: the wait for the fence request to reach it, before leases,
  is gone.)
* **Fence requests.** A member whose latest report proposes a liveset without
  me, over a liveset with me, makes me fence at once.
* **Quorum of the proposal** (clustered mode): a winner whose proposal, once
  intersected with the other winners', is no longer quorate fences itself
  instead of proposing.
* **Survival rule 2**: in that mode any member missing fences me; the mode
  ends when the whole liveset is back in my sfdomain.
* **Ejected** (the member table no longer lists me): armed, I fence, so that
  a member that still lists me can only remove me with the fence window; a
  joiner just leaves.
"""

from __future__ import annotations

from collections.abc import Iterator

from hacluster.core import survival
from hacluster.core.events import Evidence, HostView, Removal, Wait
from hacluster.core.host.membership import Membership
from hacluster.core.messages import EMPTY, HostSet, Phase, Report
from hacluster.core.phases import Trigger


class Faults(Membership):
    """Detecting a fault, deciding who survives, fencing and committing."""

    def _ejected(self) -> None:
        """The member table no longer lists me: an armed host fences (whoever
        still lists me removes me with the fence window), a joiner just leaves."""
        if self.armed:
            self._fence("ejected from the pool while armed", Trigger.EJECTED)
        else:
            self._shutdown("ejected from the pool")

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
                and (report.phase is Phase.PROPOSED or self._misses_someone(report))
            ):
                return p
        return None

    def _misses_someone(self, report: Report) -> bool:
        """Whether a peer's report shows a member of its liveset missing from a
        domain it needs: a fault of its own, not one it joined (joining those
        would echo a fault round after round among hosts that all see everyone)."""
        return bool(self._unseen(report.liveset, report.hbdomain, report.sfdomain))

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
        # a member that already committed a change of my liveset decided this round
        answered = {p for p, report in self._fresh_members(reachable)
                    if report.phase in done or (report.phase is Phase.NORMAL
                                                and not self._is_liveset(report.liveset))}
        if answered != reachable:
            return False
        return self.now - self._views_changed >= self._settle()

    def _decide(self) -> None:
        assert self.liveset is not None
        views = self._views()
        seen = tuple(HostView(h, v.hbdomain, v.sfdomain, v.statefile_access)
                     for h, v in sorted(views.items()))
        if self.statefile_mode:
            decision = survival.decide_statefile(self.me, self.liveset, views)
        else:
            decision = survival.decide_clustered(
                self.me, self.liveset, len(self.members), views
            )
        self._last_decision = self.now
        self._decided = (decision.rule, seen, self.now)
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
                self._commit(decision.liveset & self.liveset, removed, EMPTY,
                             evidence=self._evidence(removed, rule2=True))
            self._set_phase(Phase.NORMAL, Trigger.RULE2_ENTER,
                            "survival rule 2: the whole pool lost the statefile")
            return
        if decision.liveset >= self.liveset:
            self._set_phase(Phase.NORMAL, Trigger.NOBODY_TO_REMOVE,
                            f"{decision.rule}: nobody to remove")
            return
        proposal = decision.liveset & self.liveset & self._peer_proposals()
        if not self.statefile_mode and not survival.quorate(proposal, self.liveset,
                                                            len(self.members)):
            # merging disagreeing winners' proposals can leave fewer hosts than a
            # quorum: such a side must not hold the pool (it would let the fenced
            # rest form another one)
            self._fence(f"no quorum after merging proposals: {sorted(proposal)} of "
                        f"{len(self.members)} hosts", Trigger.NO_QUORUM)
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
        window = t.proof_window
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
        return waits

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
        self._commit(self._proposal, removed, EMPTY, evidence=self._evidence(removed))
        self._set_phase(Phase.NORMAL, Trigger.COMMIT, f"committed liveset {sorted(self.liveset)}")

    def _evidence(self, removed: HostSet, rule2: bool = False) -> Evidence | None:
        """Why this commit removes ``removed``: the last decision's views and rule, and
        each removed host's proof (read before the commit forgets what I knew of it)."""
        if self._decided is None:
            return None
        rule, views, decided_at = self._decided
        window = self.timing.proof_window
        removals = []
        for x in sorted(removed):
            if rule2:
                seen, by, proof = self.peers[x].last_seen(), None, "survival rule 2"
            else:
                seen, by = self._last_sighting(x)
                proof = "fence report" if self._proved_fenced(x) else "unseen"
            removals.append(Removal(x, proof, seen, by, window))
        return Evidence(rule, views, tuple(removals), decided_at, self.now)
