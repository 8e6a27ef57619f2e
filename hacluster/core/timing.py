"""Timing parameters of the liveness protocol, derived from one timeout T.

Rules (see docs/design.md):

* ``t1`` (heartbeat interval) and ``t2`` (statefile interval) are chosen so that
  every timeout spans about ten beats: ``t1 = min(T/10, 3)``,
  ``t2 = min(T/10, max(2, T/20))``.
* ``T1`` (network heartbeat timeout) and ``T2`` (statefile timeout) equal T.
* ``agree`` bounds a fault handler: it must decide within
  ``min(T/2, 5 * max(t1, t2))``, enough for several view exchanges.
* **Lease.** A host's watchdog is a lease of ``lease = min(T1, T2)``: it is
  petted so that it fires ``lease`` after the latest moment the evidence
  every possible survivor shares vouches for the host (see
  :mod:`hacluster.core.host.reports`), in every armed phase, fault handlers
  included. A host unseen by the survivors for ``min(T1, T2)`` has therefore
  run out of lease by then, give or take a beat of delay and clock drift.
* A daemon that did not run for ``min(T1, T2)/2`` (a stop-the-world pause)
  fences itself when it wakes: what it queued while frozen is stale.
* The fence window satisfies the safety inequality
  ``window >= lease - min(T1, T2) + max(t1, t2) + 2 * drift * lease``: a
  removed host's lease ran out at most a beat (the delay of the evidence)
  after the survivors' last sighting plus ``min(T1, T2)``, and clocks may run
  apart by ``drift``.

A hand-made parameter set is checked by :meth:`Timing.validate`, which names the
first violated rule; :meth:`Timing.rules` gives every rule as an
:class:`Inequality` with both sides and its margin (``hacluster node --check``
prints them).
"""

from __future__ import annotations

from dataclasses import dataclass

#: smallest supported timeout, in seconds
MIN_TIMEOUT = 1.0
#: the longest T a pool may run: an hour-long T means hours before a failed host's VMs restart
MAX_TIMEOUT = 3600.0
#: a timeout must span at least this many beats of its channel
MIN_BEATS_PER_TIMEOUT = 3
#: seconds at least that HA enable waits for a member it has never heard from
ENABLE_GRACE_FLOOR = 60.0
#: beats of the slower channel a fault handler may spend exchanging views
AGREEMENT_ROUNDS = 5
#: largest relative clock-rate difference between two hosts the window allows for
DEFAULT_DRIFT = 0.01


class TimingError(ValueError):
    """A timing parameter set violates a named rule."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"timing rule '{rule}' violated: {detail}")
        self.rule = rule


@dataclass(frozen=True)
class Inequality:
    """One timing rule: ``left op right``, both sides named and evaluated.

    ``margin`` is how far the rule is from breaking, in the rule's unit (seconds
    unless ``unit`` says otherwise): negative when it is violated, and for a
    strict rule (``>``, ``<``) zero is violated too."""

    name: str
    left_text: str
    left: float
    op: str  # one of >, >=, <, <=
    right_text: str
    right: float
    unit: str = "s"

    @property
    def margin(self) -> float:
        return self.left - self.right if self.op.startswith(">") else self.right - self.left

    @property
    def holds(self) -> bool:
        margin = self.margin
        return margin > 0 if len(self.op) == 1 else margin >= 0  # NaN holds nothing

    @property
    def formula(self) -> str:
        """``left_text = value op right_text = value``, as a report shows it."""
        return f"{self._side(self.left_text, self.left)} {self.op} " \
               f"{self._side(self.right_text, self.right)}"

    def _side(self, text: str, value: float) -> str:
        unit = f" {self.unit}" if self.unit else ""
        number = f"{value:.4g}"
        return f"{number}{unit}" if text == number else f"{text} = {number}{unit}"

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return (f"{self.left_text}={self.left:.4g}{unit} must be {self.op} {self.right_text}"
                f" = {self.right:.4g}{unit}")


@dataclass(frozen=True)
class Timing:
    """All intervals and timeouts, in seconds of a host's monotonic clock."""

    T: float
    t1: float
    t2: float
    T1: float
    T2: float
    agree: float
    lease: float
    io_deadline: float
    fence_window: float
    drift: float = DEFAULT_DRIFT

    @classmethod
    def derive(cls, timeout: float, drift: float = DEFAULT_DRIFT) -> Timing:
        """Derive a consistent parameter set from ``timeout`` (T)."""
        if not timeout >= MIN_TIMEOUT:
            raise TimingError("timeout-floor", f"T={timeout} s is below {MIN_TIMEOUT} s")
        t1 = min(timeout / 10, 3.0)
        t2 = min(timeout / 10, max(2.0, timeout / 20))
        agree = min(timeout / 2, AGREEMENT_ROUNDS * max(t1, t2))
        timing = cls(
            T=timeout, t1=t1, t2=t2, T1=timeout, T2=timeout, agree=agree,
            lease=timeout, io_deadline=t2, fence_window=0.0, drift=drift,
        )
        window = timing.minimum_fence_window()
        timing = cls(**{**timing.__dict__, "fence_window": window})
        timing.validate()
        return timing

    def minimum_fence_window(self) -> float:
        """The safety inequality's right-hand side, with the drift allowance."""
        return (self.lease - min(self.T1, self.T2) + max(self.t1, self.t2)
                + 2 * self.drift * self.lease)

    @property
    def tick(self) -> float:
        """How often a core re-evaluates its view when nothing arrives."""
        return min(self.t1, self.t2) / 2

    @property
    def stall_limit(self) -> float:
        """A daemon that did not run for this long fences itself on waking:
        peers may have judged it gone while it was frozen."""
        return min(self.T1, self.T2) / 2

    @property
    def enable_grace(self) -> float:
        """After HA enable, how long a member never heard from yet counts as still
        starting rather than missing: hosts arm as each gets to it, and a pool's
        daemons may start over more than T (many hosts, busy hosts)."""
        return max(ENABLE_GRACE_FLOOR, 2 * self.T)

    @property
    def proof_window(self) -> float:
        """A host unseen on both channels for this long has fenced (the safety
        inequality): ``min(T1, T2) + fence_window``."""
        return min(self.T1, self.T2) + self.fence_window

    @property
    def fresh(self) -> float:
        """Age below which a peer counts as fresh when judging view stability."""
        return min(self.T1, self.T2) / 2

    def rules(self) -> list[Inequality]:
        """Every rule as an inequality with its two sides, in the order
        :meth:`validate` checks them (the first violated one is named)."""
        named = {
            "T": self.T, "t1": self.t1, "t2": self.t2, "T1": self.T1, "T2": self.T2,
            "agree": self.agree, "lease": self.lease,
            "io_deadline": self.io_deadline, "fence_window": self.fence_window,
        }
        smallest = next((name for name, value in named.items() if not value > 0),
                        min(named, key=lambda name: named[name]))  # NaN is not > 0
        return [
            Inequality("positive", smallest, named[smallest], ">", "0", 0.0),
            Inequality("drift-bound", "drift", self.drift, ">=", "0", 0.0, ""),
            Inequality("drift-bound", "drift", self.drift, "<", "0.1", 0.1, ""),
            Inequality("timeout-floor", "T", self.T, ">=", "MIN_TIMEOUT", MIN_TIMEOUT),
            Inequality("beats-per-timeout", "T1", self.T1, ">=",
                       f"{MIN_BEATS_PER_TIMEOUT} * t1", MIN_BEATS_PER_TIMEOUT * self.t1),
            Inequality("beats-per-timeout", "T2", self.T2, ">=",
                       f"{MIN_BEATS_PER_TIMEOUT} * t2", MIN_BEATS_PER_TIMEOUT * self.t2),
            Inequality("io-deadline", "io_deadline", self.io_deadline, "<=", "T2/2",
                       self.T2 / 2),
            Inequality("agreement-bound", "agree", self.agree, "<=", "max(T1, T2)",
                       max(self.T1, self.T2)),
            Inequality("agreement-rounds", "agree", self.agree, ">=", "2 * max(t1, t2)",
                       2 * max(self.t1, self.t2)),
            Inequality("lease-spans-beats", "lease", self.lease, ">=",
                       f"{MIN_BEATS_PER_TIMEOUT} * max(t1, t2) + io_deadline",
                       MIN_BEATS_PER_TIMEOUT * max(self.t1, self.t2) + self.io_deadline),
            Inequality("safety-inequality", "fence_window", self.fence_window, ">=",
                       "lease - min(T1,T2) + max(t1,t2) + 2*drift*lease",
                       self.minimum_fence_window()),
        ]

    def validate(self) -> None:
        """Raise :class:`TimingError` naming the first violated rule."""
        for rule in self.rules():
            if not rule.holds:
                raise TimingError(rule.name, str(rule))
