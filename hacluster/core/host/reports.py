"""Publishing: the report a host sends every beat and writes every t2, and
the petting of its watchdogs.

Rules:

* Every report carries a new sequence number, whichever channel it goes on.
* **Sightings vouched for.** My reports give sighting ages only of hosts I
  have not removed (until I admit them again): what I see of a removed host
  is a later boot, which members still holding the removed one must not take
  for it.
* **The watchdog is a lease** (issue #14). A joiner pets it from its first
  step, before its first report, for ``lease`` from now, so that no member
  can admit it, and give it work, before its watchdog runs. A member pets it
  every beat, in every armed phase (fault handlers included), so that it
  fires ``lease`` after its **lease base**: the latest moment that evidence
  every possible survivor shares vouches for it, and never otherwise. The
  base is the latest of:

  - *every host I keep* (the liveset, or my proposal while PROPOSED): the
    earliest of their sightings of me, each the latest sighting age of me
    (either channel) in its latest report of its pinned boot, reckoned from
    when I received it; arming counts as a sighting. A survivor is a host I
    keep, so its last sighting of me is no earlier.
  - *the SR* (statefile mode, outside survival-rule-2 mode): when I issued
    the latest slot write that my next read showed back. Survivors read the
    SR (they need statefile access) and see that write land after I issued
    it; they count me unseen only once my slot stops changing.
  - *a quorum* (clustered mode): the latest moment by which hosts I keep
    that saw me then or later make, with me, a quorum
    (:func:`hacluster.core.survival.quorate`). Two quorums of the liveset
    share a host, and survivors of clustered mode are one.

  A host that stops being seen therefore loses its lease ``lease`` after the
  last sighting a survivor can count, whether it has noticed anything or not
  (an isolated host notices only T1 later, and a paused one never), and the
  fence window only covers the evidence's delay and clock drift.
* A fenced host's last words are its report with phase FENCED and no proposal.
* A member publishes the epoch of its liveset; a joiner the newest committed
  liveset it knows of, for a cold start (:mod:`hacluster.core.coldstart`).
"""

from __future__ import annotations

from dataclasses import replace

from hacluster.core import survival
from hacluster.core.events import PetWatchdog, SendHeartbeat, Watchdog
from hacluster.core.host.domains import Domains
from hacluster.core.host.state import NEVER
from hacluster.core.messages import EMPTY, Phase, Report
from hacluster.core.phases import Trigger


class Reports(Domains):
    """What a host publishes about itself."""

    def _pet(self) -> None:
        """Once a beat: pet the watchdog for what is left of my lease; with less
        than a beat left, fence (my last words tell the survivors at once)."""
        if self.phase is Phase.JOINING:
            remaining = self.timing.lease
        elif self.armed:
            base = self._lease_base()
            remaining = base + self.timing.lease - self.now
            if remaining < 1.5 * self.timing.t1:  # gone before the next beat, or nearly
                self._fence(f"lease running out: nothing every survivor shares has vouched "
                            f"for me for {self.now - base:.2f}s", Trigger.LEASE)
                return
        else:
            return
        self._out.append(PetWatchdog(Watchdog.LEASE, remaining))

    def _lease_base(self) -> float:
        """The latest moment that evidence every possible survivor shares vouches
        for me (the module rules); my lease runs ``lease`` from it."""
        keep = self._proposal if self.phase is Phase.PROPOSED else self.liveset
        assert keep is not None
        seen = [(self._sighting(p), p) for p in keep - {self.me}]
        base = min(seen)[0] if seen else self.now
        if self.statefile_mode:
            if not self.rule2:
                base = max(base, self._sr_vouched)
        else:
            base = max(base, self._quorum_base(sorted(seen, reverse=True)))
        return base

    def _sighting(self, p: int) -> float:
        """When ``p`` last saw me, on either channel, by its latest report of its
        pinned boot (reckoned from its arrival); arming counts as a sighting."""
        peer = self.peers[p]
        report = peer.report
        seen = self._armed_at
        if report is not None and report.boot == peer.pinned_boot:
            ages = [a[self.me] for a in (report.hb_age_ms, report.sf_age_ms)
                    if self.me < len(a) and a[self.me] >= 0]
            if ages:
                seen = max(seen, peer.report_at - min(ages) / 1000)
        return seen

    def _quorum_base(self, seen: list[tuple[float, int]]) -> float:
        """The latest moment by which hosts I keep that saw me then or later make,
        with me, a quorum of my liveset (``seen``: their sightings, latest first)."""
        assert self.liveset is not None
        side = {self.me}
        if survival.quorate(frozenset(side), self.liveset, len(self.members)):
            return self.now
        for sighting, p in seen:
            side.add(p)
            if survival.quorate(frozenset(side), self.liveset, len(self.members)):
                return sighting
        return NEVER

    def _publish_heartbeat(self) -> None:
        self._out.append(SendHeartbeat(self._report(), self._others()))

    def _ages(self, attr: str) -> tuple[int, ...]:
        """Sightings I vouch for: none of a host I removed until I admit it again
        (what I see of it meanwhile is a later boot, which members still holding
        the removed boot must not take for it)."""
        now, vouches_for = self.now, self._vouches_for
        seen_at = [getattr(peer, attr) for peer in self.peers]
        return tuple([int((now - seen) * 1000) if seen != NEVER and vouches_for(index)
                      else -1 for index, seen in enumerate(seen_at)])

    def _vouches_for(self, index: int) -> bool:
        return index not in self._removed

    def _report(self) -> Report:
        self._seq += 1
        joining = self.phase is Phase.JOINING
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
            joining=joining,
            excluded=self.phase is Phase.EXCLUDED,
            statefile_corrupted=self.counters.corrupt_slots > 0,
            lock_request=self._requesting(),
            lock_grant=self._grant,
            join_acks=self._join_acks,
            fault_episode=self._episodes,
            epoch=self._cold.newest.epoch if joining else self.epoch,
            cold_liveset=self._cold.newest.liveset if joining else EMPTY,
            hb_age_ms=self._ages("last_net"),
            sf_age_ms=self._ages("slot_changed"),
        )

    def fenced_report(self) -> Report:
        """The last words of a fenced host, written after its workloads died."""
        return replace(self._report(), phase=Phase.FENCED, proposal=None)
