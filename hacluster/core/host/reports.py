"""Publishing: the report a host sends every beat and writes every t2, and
the petting of its watchdogs.

Rules:

* Every report carries a new sequence number, whichever channel it goes on.
* **Sightings vouched for.** My reports give sighting ages only of hosts I
  have not removed (until I admit them again): what I see of a removed host
  is a later boot, which members still holding the removed one must not take
  for it.
* **Watchdogs.** A joiner pets its watchdogs from its first step (before its
  first report), so that no member can admit it, and give it work, before
  its watchdog runs. Members pet in NORMAL and PROPOSED, never while
  STABILIZING or AGREEING, and only while **seen lately by every host they
  keep** (the liveset, or the proposal): each one's latest report of its
  pinned boot shows it saw me, on either channel, no longer than
  ``pet_freshness`` ago as reckoned from when I received that report. So a
  host that stops being seen stops petting within ``pet_freshness`` of the
  last sighting any survivor can count, whether it has noticed anything yet
  or not (an isolated host notices only T1 later, and a paused one never);
  the fence window covers exactly that. Arming counts as a sighting, as it
  does for every member. The statefile watchdog is petted
  only with statefile access, or in survival-rule-2 mode.
* A fenced host's last words are its report with phase FENCED and no proposal.
* A member publishes the epoch of its liveset; a joiner the newest committed
  liveset it knows of, for a cold start (:mod:`hacluster.core.coldstart`).
"""

from __future__ import annotations

from dataclasses import replace

from hacluster.core.events import PetWatchdog, SendHeartbeat, Watchdog
from hacluster.core.host.domains import Domains
from hacluster.core.host.state import NEVER
from hacluster.core.messages import EMPTY, Phase, Report


class Reports(Domains):
    """What a host publishes about itself."""

    def _pet(self) -> None:
        # a joiner pets from its first step, before its first report, so that no
        # member can admit it (and give it work) before its watchdog runs
        if self.phase not in (Phase.NORMAL, Phase.PROPOSED, Phase.JOINING):
            return
        if self.phase is not Phase.JOINING and not self._seen_lately():
            return
        t = self.timing
        self._out.append(PetWatchdog(Watchdog.HEARTBEAT, t.Wh))
        if self.statefile_mode and (self.statefile_access or self.rule2):
            self._out.append(PetWatchdog(Watchdog.STATEFILE, t.Ws))

    def _seen_lately(self) -> bool:
        """Whether every host I keep saw me within ``pet_freshness``, by the
        sighting ages of me in its latest report, reckoned from its arrival;
        arming counts as a sighting (every member counts the others as seen
        when it arms)."""
        keep = self._proposal if self.phase is Phase.PROPOSED else self.liveset
        if keep is None:
            return True
        since = self.now - self.timing.pet_freshness
        for p in keep - {self.me}:
            peer = self.peers[p]
            report = peer.report
            seen = self._armed_at
            if report is not None and report.boot == peer.pinned_boot:
                ages = [a[self.me] for a in (report.hb_age_ms, report.sf_age_ms)
                        if self.me < len(a) and a[self.me] >= 0]
                if ages:
                    seen = max(seen, peer.report_at - min(ages) / 1000)
            if seen < since:
                return False
        return True

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
