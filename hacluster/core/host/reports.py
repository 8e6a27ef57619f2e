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
  STABILIZING or AGREEING. The statefile watchdog is petted only with
  statefile access, or in survival-rule-2 mode.
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
