"""What a host's progress waits on, said for people (the status, the event
log, chaos journals).

Rules:

* **Waiting.** :meth:`Waits.waits` says what my progress waits on: while
  PROPOSED, each removed host not yet provably fenced and the evidence
  awaited; while JOINING, each armed host that has not acked me and why, from
  its report, or, hearing none in statefile mode, what keeps a cold start
  from forming (the hosts of the last liveset missing, and why); while
  NORMAL (outside rule-2 mode), the joiners I do not ack and the acks still
  missing for those I do.
* Every beat, a change of the hosts or evidence waited for is output as
  :class:`Waiting`; nothing is output while it stays the same.
"""

from __future__ import annotations

from hacluster.core.events import Wait, Waiting
from hacluster.core.host.faults import Faults
from hacluster.core.messages import Phase, Report


class Waits(Faults):
    """The hosts and evidence my progress waits for."""

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
        members = {p for p in self.members
                   if p != self.me and (r := self._fresh_report(p)) is not None
                   and r.phase.armed and self._seen_alive(p)}
        if not members:
            if self.statefile_mode:
                return self._cold_start_waits() or [Wait(None, "cold-agree", (
                    f"cold start: forming {self._cold.newest} once its hosts agree for "
                    "two beats"))]
            return [Wait(None, "members", "join waits for an armed host: none heard")]
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
