"""Cold start of a statefile-mode pool: which liveset re-forms after every host
went down, decided from what the heartbeat SR recorded. Pure.

Rules (the safety argument is in docs/design.md, "Cold start"):

* **Epochs.** Every liveset commit takes an epoch above every epoch its host
  has seen, its own and any in a report it holds (:func:`next_epoch`); HA
  enable is epoch 1; a joiner that adopts a pool's liveset adopts its epoch.
  A commit made after seeing another therefore outranks it.
* **Evidence.** A report records ``(epoch, liveset)`` (:func:`recorded`): a
  member's, a fenced host's last words and a leaving host's report their own;
  a joiner's relays the newest it knows (``cold_liveset``), so that what a
  slot held survives the slot being overwritten by its host's next boot.
  Reports with no liveset or epoch 0 record nothing.
* **The newest committed liveset** (:class:`Newest`) is the highest epoch
  recorded and the union of the livesets recorded at that epoch (commits of
  one epoch that did not see each other: all their hosts are needed).
  Merging is monotone: every joiner that reads the same slots and hears the
  same joiners holds the same newest liveset.
* **Forming** (:func:`missing`): a joiner forms the pool with exactly the
  newest liveset's hosts that are still members (an ejected host never comes
  back: its daemon refuses to start) only when it is one of them, has
  statefile access, has watched the SR for the proof window with no news of
  an armed host on either channel, and every other one is a joiner that it
  hears and sees writing its slot, that hears and sees all of them, and that
  reports the same newest liveset; the membership layer requires this to
  hold for two beats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from hacluster.core.messages import EMPTY, HostSet, Phase, Report


@dataclass(frozen=True)
class Newest:
    """The newest committed liveset known: its epoch and every host recorded at it."""

    epoch: int = 0
    liveset: HostSet = EMPTY

    def merge(self, other: Newest) -> Newest:
        """The newer of two; at the same epoch, the union of their hosts."""
        if not other.liveset or other.epoch < self.epoch:
            return self
        if other.epoch > self.epoch:
            return other
        return Newest(self.epoch, self.liveset | other.liveset)

    def __str__(self) -> str:
        return f"{sorted(self.liveset)} (epoch {self.epoch})"


NOTHING = Newest()


@dataclass
class ColdWatch:
    """A joiner's watch of the SR for a cold start: the newest liveset it knows,
    since when it has watched (its first slot read, again after a stall), and
    when news of an armed host last arrived."""

    newest: Newest = NOTHING
    watching_since: float = -math.inf
    armed_news: float = -math.inf
    last_step: float = -math.inf

    def quiet_since(self) -> float:
        """Since when I have watched the SR with no news of an armed host."""
        return max(self.watching_since, self.armed_news)


def recorded(report: Report | None) -> Newest:
    """What a report records of the pool's newest liveset (see the module rules)."""
    if report is None or report.epoch <= 0:
        return NOTHING
    if report.phase is Phase.JOINING:
        return Newest(report.epoch, report.cold_liveset)
    return Newest(report.epoch, report.liveset)


def newest(reports: Iterable[Report | None], start: Newest = NOTHING) -> Newest:
    """``start`` merged with what every report records."""
    for report in reports:
        start = start.merge(recorded(report))
    return start


def next_epoch(own: int, reports: Iterable[Report | None]) -> int:
    """The epoch of a new commit: above my own and every epoch in the reports I hold."""
    return 1 + max([own, *(r.epoch for r in reports if r is not None)])


def missing(me: int, newest: Newest, hosts: HostSet, reports: dict[int, Report],
            hbdomain: HostSet, sfdomain: HostSet) -> dict[int, str]:
    """Hosts of ``hosts`` (the newest liveset's hosts still members) that keep it
    from forming now, and why (empty: every other host of it is ready).
    ``reports``: the fresh reports I hold, by host."""
    why: dict[int, str] = {}
    for p in sorted(hosts - {me}):
        report = reports.get(p)
        if report is None:
            why[p] = "not back (no heartbeat, its slot unchanged)"
        elif not report.joining:
            alive = p in hbdomain | sfdomain
            why[p] = (f"it is {report.phase.name}, not joining" if alive else
                      f"not back (its slot still holds its last boot's {report.phase.name} "
                      "report)")
        elif p not in hbdomain:
            why[p] = "I do not hear its heartbeats"
        elif p not in sfdomain:
            why[p] = "I do not see its slot change"
        elif recorded(report) != newest:
            why[p] = f"it knows {recorded(report)} as the newest liveset"
        elif not hosts <= report.hbdomain & report.sfdomain:
            lacking = sorted(hosts - (report.hbdomain & report.sfdomain))
            why[p] = f"it does not hear or see hosts {lacking} yet"
    return why
