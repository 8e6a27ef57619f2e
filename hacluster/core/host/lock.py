"""The master lock as one host sees it: whose grants count, whom it grants,
whether it holds the lock (the rules of granting and holding themselves are
:mod:`hacluster.core.masterlock`).

Rules:

* Grants are read from slots in statefile mode (the lock lives on the
  statefile) and from heartbeats in clustered mode, only of a host's pinned
  boot.
* Armed hosts outside survival-rule-2 mode request the lock.
* A joiner votes with the liveset in the freshest report of an armed peer, so
  that it already grants the sitting master when it is admitted.
* I am master while I request, grant myself, and every liveset member's grant
  names me; gaining and losing it are output.
"""

from __future__ import annotations

from collections.abc import Mapping

from hacluster.core import masterlock
from hacluster.core.events import MasterGained, MasterLost
from hacluster.core.host.domains import Domains
from hacluster.core.messages import EMPTY, HostSet, Phase


class Lock(Domains):
    """Grants, requests and holding of the master lock."""

    def _published_locks(self) -> tuple[Mapping[int, int | None], HostSet]:
        """Each host's latest grant and who requests: from slots in statefile mode
        (the lock lives on the statefile), from heartbeats in clustered mode."""
        if self._locks is None:
            self._locks = self._scan_locks()
        published, others = self._locks
        grants = published if self.statefile_mode else {**published, self.me: self._grant}
        return grants, others | {self.me} if self._requesting() else others

    def _scan_locks(self) -> tuple[dict[int, int | None], frozenset[int]]:
        """Every host's published grant and the other hosts that request."""
        grants: dict[int, int | None] = {}
        requesting = set()
        me, statefile = self.me, self.statefile_mode
        for index, peer in enumerate(self.peers):
            report = peer.slot_report if statefile else peer.report
            if report is not None and report.boot == peer.pinned_boot:
                grants[index] = report.lock_grant
                if report.lock_request and index != me:
                    requesting.add(index)
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
