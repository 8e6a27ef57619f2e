"""Timing parameters of the liveness protocol, derived from one timeout T.

Rules (see docs/design.md):

* ``t1`` (heartbeat interval) and ``t2`` (statefile interval) are chosen so that
  every timeout spans about ten beats: ``t1 = min(T/10, 3)``,
  ``t2 = min(T/10, max(2, T/20))``.
* ``T1`` (network heartbeat timeout) and ``T2`` (statefile timeout) equal T.
* ``agree`` bounds a fault handler: it must decide within
  ``min(T/2, 5 * max(t1, t2))``, enough for several view exchanges.
* A host pets its watchdogs only while its view is healthy, so each watchdog
  must outlast detection plus a whole fault handler: ``Wh = T1 + agree + 2*t1``,
  ``Ws = T2 + agree + 3*t2``.
* A daemon that did not run for ``min(T1, T2)/2`` (a stop-the-world pause)
  fences itself when it wakes: what it queued while frozen is stale.
* A liveset change is committed no sooner than ``fence_request_reach`` after
  the decision, so a loser that misjudged can still read the fence request.
* The fence window satisfies the safety inequality
  ``window >= max(Wh, Ws) - min(T1, T2) + max(t1, t2)``, plus an allowance for
  clock-rate drift between hosts.

A hand-made parameter set is checked by :meth:`Timing.validate`, which names the
first violated rule.
"""

from __future__ import annotations

from dataclasses import dataclass

#: smallest supported timeout, in seconds
MIN_TIMEOUT = 1.0
#: a timeout must span at least this many beats of its channel
MIN_BEATS_PER_TIMEOUT = 3
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
class Timing:
    """All intervals and timeouts, in seconds of a host's monotonic clock."""

    T: float
    t1: float
    t2: float
    T1: float
    T2: float
    agree: float
    Wh: float
    Ws: float
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
        wh = timeout + agree + 2 * t1
        ws = timeout + agree + 3 * t2
        timing = cls(
            T=timeout, t1=t1, t2=t2, T1=timeout, T2=timeout, agree=agree,
            Wh=wh, Ws=ws, io_deadline=t2, fence_window=0.0, drift=drift,
        )
        window = timing.minimum_fence_window()
        timing = cls(**{**timing.__dict__, "fence_window": window})
        timing.validate()
        return timing

    def minimum_fence_window(self) -> float:
        """The safety inequality's right-hand side, with the drift allowance."""
        watchdog = max(self.Wh, self.Ws)
        base = watchdog - min(self.T1, self.T2) + max(self.t1, self.t2)
        return base + 2 * self.drift * watchdog

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
    def fence_request_reach(self) -> float:
        """Time for a fence request to reach a loser on either channel."""
        return max(self.t1, 2 * self.t2 + self.io_deadline)

    @property
    def proof_window(self) -> float:
        """A host unseen on both channels for this long has fenced (the safety
        inequality): ``min(T1, T2) + fence_window``."""
        return min(self.T1, self.T2) + self.fence_window

    @property
    def fresh(self) -> float:
        """Age below which a peer counts as fresh when judging view stability."""
        return min(self.T1, self.T2) / 2

    def validate(self) -> None:
        """Raise :class:`TimingError` naming the first violated rule."""
        named = {
            "T": self.T, "t1": self.t1, "t2": self.t2, "T1": self.T1, "T2": self.T2,
            "agree": self.agree, "Wh": self.Wh, "Ws": self.Ws,
            "io_deadline": self.io_deadline, "fence_window": self.fence_window,
        }
        for name, value in named.items():
            if not value > 0:
                raise TimingError("positive", f"{name}={value} must be > 0")
        if not 0 <= self.drift < 0.1:
            raise TimingError("drift-bound", f"drift={self.drift} must be in [0, 0.1)")
        if self.T < MIN_TIMEOUT:
            raise TimingError("timeout-floor", f"T={self.T} s is below {MIN_TIMEOUT} s")
        for timeout, interval, label in ((self.T1, self.t1, "T1/t1"), (self.T2, self.t2, "T2/t2")):
            if timeout < MIN_BEATS_PER_TIMEOUT * interval:
                raise TimingError(
                    "beats-per-timeout",
                    f"{label}={timeout}/{interval}: a timeout must span at least "
                    f"{MIN_BEATS_PER_TIMEOUT} beats",
                )
        if self.io_deadline > self.T2 / 2:
            raise TimingError(
                "io-deadline", f"io_deadline={self.io_deadline} must be at most T2/2={self.T2 / 2}"
            )
        if self.agree > max(self.T1, self.T2):
            raise TimingError("agreement-bound", f"agree={self.agree} exceeds max(T1, T2)")
        if self.agree < 2 * max(self.t1, self.t2):
            raise TimingError("agreement-rounds", f"agree={self.agree} allows fewer than two "
                              f"view exchanges of max(t1, t2)={max(self.t1, self.t2)}")
        if self.Wh < self.T1 + self.agree + self.t1:
            raise TimingError(
                "heartbeat-watchdog-covers-fault-handler",
                f"Wh={self.Wh} < T1 + agree + t1 = {self.T1 + self.agree + self.t1}",
            )
        if self.Ws < self.T2 + self.agree + self.t2 + self.io_deadline:
            raise TimingError(
                "statefile-watchdog-covers-fault-handler",
                f"Ws={self.Ws} < T2 + agree + t2 + io_deadline = "
                f"{self.T2 + self.agree + self.t2 + self.io_deadline}",
            )
        needed = self.minimum_fence_window()
        if self.fence_window < needed:
            raise TimingError(
                "safety-inequality",
                f"fence_window={self.fence_window:.3f} < max(Wh,Ws) - min(T1,T2) + "
                f"max(t1,t2) + drift allowance = {needed:.3f}",
            )
