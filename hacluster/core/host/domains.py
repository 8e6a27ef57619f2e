"""Peers and domains: which reports count, and whom a host hears and sees.

Rules:

* Only reports of this pool's generation count, from a sender inside the
  pool (and, read from a slot, the slot's own host); of each peer's reports
  the greatest ``(boot, seq)`` is kept, older or equal ones are stale.
  Drops are counted in :class:`~hacluster.core.host.state.Counters`.
* **Newer only, on both channels.** A heartbeat counts only if its
  ``(boot, seq)`` is newer than every heartbeat accepted from that peer; a
  slot only if its ``(boot, seq)`` is newer than the best ever read from that
  slot. The best stamp of each channel never moves back; a slot read older
  than it is a replay (someone wrote back an old, genuinely sealed image):
  counted stale and ignored, so writing old images back in turn never makes a
  dead host look alive. An unchanged slot is neither news nor stale.
* **Pinned boot.** A report proves liveness only if it is of the peer's
  pinned boot, pinned at first sight. A member's pin holds (its replacement
  incarnation is not the member); a non-member's moves up to a newer boot, so
  that a dead boot's late last words never stop the host's next boot from
  joining.
* **Last words.** A peer's latest FENCED report is kept apart, by boot: it
  outlives the reports of a later boot.
* **Domains.** A liveset member is in my hbdomain while I accepted a
  heartbeat of its pinned boot within T1 and its latest report shows it heard
  me within T1 (one-way links count as broken). It is in my sfdomain while
  its slot's ``(boot, seq)`` grew within T2 on my clock. I am in my own
  sfdomain while my own slot keeps changing when I read it back: that is my
  statefile access.
* A peer's report is *fresh* if received within min(T1, T2); a member's
  counts only if of its pinned boot.
* A new heartbeat that changes a peer's phase, liveset, proposal, exclusion,
  acks or hbdomain is evaluated at once; others wait for the next tick.
* **Starting.** After HA enable, a liveset member that has not shown up on a
  channel since I armed (no heartbeat accepted; its slot not seen changing)
  is in that channel's domain until ``enable_grace`` after I armed: the
  pool's hosts arm one by one, and a large or busy pool takes longer than T
  to start. A member that has not shown up by then is missing as usual
  (arming counted as its sighting). The grace only delays suspicion, and a
  later removal is no less safe: the lease rule is unchanged.
* A member newly missing from a domain is announced once as a :class:`Suspect`.
"""

from __future__ import annotations

from collections.abc import Iterator

from hacluster.core.events import SlotCorrupt, SlotsRead, Suspect
from hacluster.core.host.state import HostState, Peer
from hacluster.core.messages import HostSet, Phase, Report


class Domains(HostState):
    """Inputs, domains and fresh reports."""

    def _accept(self, report: Report) -> Peer | None:
        if report.generation != self.config.generation:
            self.counters.wrong_generation += 1
            return None
        if report.sender not in self.members:
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
            self._forget_derived()

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
        mine = event.slots.get(self.me)
        seq, issued = self._write_issued
        if isinstance(mine, Report) and (mine.boot, mine.seq) == (self.boot, seq):
            self._sr_vouched = issued  # my write landed: every reader of the SR sees it
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
            if peer.slot_stamp is not None and content.stamp < peer.slot_stamp:
                self.counters.stale += 1  # an old image written back: a replay
                continue
            if peer.slot_stamp is not None and content.stamp > peer.slot_stamp and (
                self._counts_for(peer, content)
            ):
                peer.slot_changed = self.now
            peer.slot_stamp = content.stamp
            peer.slot_report = content
            self._forget_derived()
            self._remember(peer, content)

    def _counts_for(self, peer: Peer, report: Report) -> bool:
        """Whether a report proves liveness: of the pinned boot, pinned at first sight,
        and not its last words.

        A member's pin holds (its replacement incarnation is not the member);
        a non-member's moves up to a newer boot, so that a dead boot's late
        last words never stop the host's next boot from joining."""
        member = self.liveset is not None and report.sender in self.liveset
        if peer.pinned_boot is None or (not member and report.boot > peer.pinned_boot):
            peer.pinned_boot = report.boot
            self._forget_derived()
        # last words prove the opposite: a host that stalled and fenced must not look
        # alive for another T1 (its survivors, no longer seen by it, stop petting)
        return report.boot == peer.pinned_boot and report.phase is not Phase.FENCED

    def _compute_domains(self) -> None:
        t = self.timing
        me, now, T1, T2 = self.me, self.now, t.T1, t.T2
        hb = {me}
        sf: set[int] = set()
        # HA enable's grace: members yet to show up on a channel are starting
        starting = self.liveset if now < self._starting_until else None
        armed_at, statefile = self._armed_at, self.statefile_mode
        for index, peer in enumerate(self.peers):
            waited = starting is not None and index in starting and index != me
            if waited and peer.last_net <= armed_at:
                hb.add(index)
            elif index != me and now - peer.last_net < T1:
                report = peer.report
                # one-way links: a peer whose report lacks me is not in my hbdomain
                # (no report yet, or a joiner's, cannot have heard me: grace)
                if report is None or report.joining:
                    hb.add(index)
                else:
                    if peer.hears_me_in is not report:  # a report is judged once
                        peer.hears_me_in, peer.hears_me = report, self._hears_me(report)
                    if peer.hears_me:
                        hb.add(index)
            if now - peer.slot_changed < T2 or (
                    waited and statefile and peer.slot_changed <= armed_at):
                sf.add(index)
        # an unchanged domain stays the same object: reports republish it as is,
        # and receivers compare it by identity first (_notable_change)
        if hb != self.hbdomain:
            self.hbdomain = frozenset(hb)
        if sf != self.sfdomain:
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
        return self._unseen(self.liveset, self.hbdomain, self.sfdomain, self.rule2)

    def _unseen(self, liveset: HostSet, hbdomain: HostSet, sfdomain: HostSet,
                rule2: bool = False) -> HostSet:
        """Members of ``liveset`` absent from a domain this mode relies on (the
        statefile's not in survival-rule-2 mode), by my domains or a peer's."""
        need = hbdomain & sfdomain if self.statefile_mode and not rule2 else hbdomain
        return liveset - need

    def _track_suspects(self) -> None:
        if self.liveset is None:
            return
        current = {(p, "network") for p in self.liveset - self.hbdomain}
        if self.statefile_mode:
            current |= {(p, "statefile") for p in self.liveset - self.sfdomain}
        for host, channel in sorted(current - self._suspected):
            self._out.append(Suspect(host, channel))
        self._suspected = current

    def _fresh_report(self, p: int) -> Report | None:
        """Latest report of ``p``, of any boot, if received within min(T1, T2)."""
        peer = self.peers[p]
        if peer.report is None or self.now - peer.report_at >= self._fresh_for:
            return None
        return peer.report

    def _seen_alive(self, p: int) -> bool:
        """Whether ``p`` sent a heartbeat or changed its slot lately: a slot read
        once and never since is what a host left behind, not a member."""
        return self.now - self.peers[p].last_seen() < self._fresh_for

    def _fresh_member_report(self, p: int) -> Report | None:
        """Latest report of liveset member ``p`` from its pinned boot, if recent."""
        report = self._fresh_report(p)
        if report is None or report.boot != self.peers[p].pinned_boot:
            return None
        return report

    def _fresh_members(self, among: HostSet | None = None) -> Iterator[tuple[int, Report]]:
        """Liveset members (or ``among``), but me, with a fresh report of their pinned boot.

        Those of the liveset are kept until the next input or change of a peer or the
        liveset (``_fresh``): a step asks for them several times."""
        assert self.liveset is not None
        if among is not None:
            return self._scan_fresh(among)
        if self._fresh is None:
            self._fresh = tuple(self._scan_fresh(self.liveset))
        return iter(self._fresh)

    def _scan_fresh(self, among: HostSet) -> Iterator[tuple[int, Report]]:
        """:meth:`_fresh_member_report` of each of ``among`` but me, inlined."""
        me, now, fresh_for, peers = self.me, self.now, self._fresh_for, self.peers
        for p in self._in_order(among):
            if p == me:
                continue
            peer = peers[p]
            report = peer.report
            if (report is not None and not now - peer.report_at >= fresh_for
                    and report.boot == peer.pinned_boot):
                yield p, report

    def _in_order(self, hosts: HostSet) -> tuple[int, ...]:
        """``hosts`` sorted; the last set sorted is remembered (the liveset, mostly)."""
        if hosts is not self._order_of:
            self._order_of, self._order = hosts, tuple(sorted(hosts))
        return self._order


def _notable_change(old: Report, new: Report) -> bool:
    """Whether a new report warrants evaluating now rather than at the next tick."""
    return (
        old.phase is not new.phase
        or old.excluded != new.excluded
        or _differ(old.liveset, new.liveset)
        or _differ(old.proposal, new.proposal)
        or _differ(old.join_acks, new.join_acks)
        or _differ(old.hbdomain, new.hbdomain)
    )


def _differ(old: HostSet | None, new: HostSet | None) -> bool:
    """Whether two host sets differ; one set object (an unchanged view, decoded
    once or republished as is) is not compared element by element."""
    return old is not new and old != new
