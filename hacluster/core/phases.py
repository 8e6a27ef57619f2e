"""The phases of one host's liveness state machine, as data.

Rules:

* A host starts JOINING (:data:`INITIAL`). FENCED and EXCLUDED are final:
  no transition leaves them.
* Every phase change names its :class:`Trigger`. :data:`TRANSITIONS` lists,
  for each trigger, the phases it may leave and the phase it enters;
  :func:`check_transition` refuses any other change with
  :class:`IllegalTransition` (naming the old and new phase, the trigger and
  why it fired). ``rule2-leave`` is the one self-loop: leaving survival-rule-2
  mode keeps the host NORMAL, so it changes no phase.
* :data:`INVARIANTS` hold after every input the core handles;
  :func:`check_invariants` raises :class:`InvariantViolation` on the first
  that does not. Either exception means the core is broken: a daemon that
  stops on it stops petting its watchdogs, so its host fences.
* The state diagram and the trigger table in docs/design.md are generated
  from this module (:func:`doc_block`, ``tools/phase_diagram.py --write``);
  a test fails when the document drifts from the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from hacluster.core.messages import HostSet, Phase

INITIAL = Phase.JOINING
ARMED = frozenset(p for p in Phase if p.armed)
FINAL = frozenset({Phase.FENCED, Phase.EXCLUDED})


class Trigger(Enum):
    """Why a host changes phase; the value is the name the docs use."""

    HA_ENABLE = "ha-enable"
    JOIN = "join"
    COLD_START = "cold-start"
    MEMBER_MISSING = "member-missing"
    PEER_IN_FAULT = "peer-in-fault"
    PROPOSAL_MEMBER_MISSING = "proposal-member-missing"
    VIEW_STABLE = "view-stable"
    AGREE_DEADLINE = "agree-deadline"
    NOBODY_TO_REMOVE = "nobody-to-remove"
    PROPOSE = "propose"
    RULE2_ENTER = "rule2-enter"
    RULE2_LEAVE = "rule2-leave"
    COMMIT = "commit"
    LOST = "lost"
    NO_QUORUM = "no-quorum"
    FENCE_REQUEST = "fence-request"
    STALL = "stall"
    LEASE = "lease"
    RULE2_FAILURE = "rule2-failure"
    EJECTED = "ejected"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class Transition:
    """``trigger`` moves a host from any phase in ``sources`` to ``target``."""

    trigger: Trigger
    sources: frozenset[Phase]
    target: Phase
    text: str


def _from(*phases: Phase) -> frozenset[Phase]:
    return frozenset(phases)


S = Phase  # short names for the table below
TRANSITIONS: tuple[Transition, ...] = (
    Transition(Trigger.HA_ENABLE, _from(S.JOINING), S.NORMAL,
               "created with a liveset: HA enable arms the whole pool"),
    Transition(Trigger.JOIN, _from(S.JOINING), S.NORMAL,
               "a member that acked me, and that I hear or see writing, lists me in its "
               "liveset: I adopt it"),
    Transition(Trigger.COLD_START, _from(S.JOINING), S.NORMAL,
               "no armed host: clustered mode, n/2 + 1 joiners hear the same set; "
               "statefile mode, every host of the newest liveset on the SR joins, "
               "after the proof window of quiet; both for two beats"),
    Transition(Trigger.MEMBER_MISSING, _from(S.NORMAL), S.STABILIZING,
               "a liveset member left a domain I need"),
    Transition(Trigger.PEER_IN_FAULT, _from(S.NORMAL), S.STABILIZING,
               "a member reports a fault of its own, or a proposal, over my "
               "liveset, newer than the round I last decided"),
    Transition(Trigger.PROPOSAL_MEMBER_MISSING, _from(S.PROPOSED), S.STABILIZING,
               "a member of my proposal left a domain I need"),
    Transition(Trigger.VIEW_STABLE, _from(S.STABILIZING), S.AGREEING,
               "every member fresh or timed out (and survival rule 1 does not "
               "decide at once)"),
    Transition(Trigger.AGREE_DEADLINE, _from(S.STABILIZING), S.AGREEING,
               "the view did not stabilise within `agree` of the fault"),
    Transition(Trigger.NOBODY_TO_REMOVE, _from(S.STABILIZING, S.AGREEING), S.NORMAL,
               "I survive and the decision keeps the whole liveset (from "
               "STABILIZING: survival rule 1 at once)"),
    Transition(Trigger.PROPOSE, _from(S.STABILIZING, S.AGREEING), S.PROPOSED,
               "I survive and remove hosts: publish the proposal, the fence "
               "request (from STABILIZING: survival rule 1 at once)"),
    Transition(Trigger.RULE2_ENTER, _from(S.AGREEING), S.NORMAL,
               "survival rule 2: the whole liveset lost the statefile and I hear "
               "all of it"),
    Transition(Trigger.RULE2_LEAVE, _from(S.NORMAL), S.NORMAL,
               "the whole liveset is back on the statefile: rule-2 mode ends"),
    Transition(Trigger.COMMIT, _from(S.PROPOSED), S.NORMAL,
               "every removed host provably fenced (its lease ran out, or its last "
               "words): commit liveset ∩ proposal"),
    Transition(Trigger.LOST, _from(S.AGREEING), S.FENCED,
               "the decision does not keep me"),
    Transition(Trigger.NO_QUORUM, _from(S.AGREEING), S.FENCED,
               "clustered mode: my proposal merged with the other winners' is "
               "not quorate"),
    Transition(Trigger.FENCE_REQUEST, ARMED, S.FENCED,
               "a member proposes a liveset without me over a liveset with me"),
    Transition(Trigger.STALL, ARMED, S.FENCED,
               "the core was not run for the stall limit: peers may have removed me"),
    Transition(Trigger.LEASE, ARMED, S.FENCED,
               "my watchdog lease has less than a beat left: nothing every possible "
               "survivor shares vouches for me (I fence before the watchdog does)"),
    Transition(Trigger.RULE2_FAILURE, _from(S.NORMAL), S.FENCED,
               "a member left a domain in survival-rule-2 mode"),
    Transition(Trigger.EJECTED, ARMED, S.FENCED,
               "the member table no longer lists me while I am armed: whoever "
               "still lists me removes me with the fence window"),
    Transition(Trigger.SHUTDOWN, frozenset(Phase) - FINAL, S.EXCLUDED,
               "clean shutdown: publish excluded and disarm"),
)
del S

BY_TRIGGER: dict[Trigger, Transition] = {t.trigger: t for t in TRANSITIONS}


def _edges() -> dict[tuple[Phase, Phase], tuple[Trigger, ...]]:
    edges: dict[tuple[Phase, Phase], list[Trigger]] = {}
    for t in TRANSITIONS:
        for source in t.sources:
            edges.setdefault((source, t.target), []).append(t.trigger)
    return {edge: tuple(edges[edge]) for edge in sorted(edges)}


EDGES: dict[tuple[Phase, Phase], tuple[Trigger, ...]] = _edges()
"""Every allowed ``(old, new)`` phase pair and the triggers that allow it."""


class IllegalTransition(RuntimeError):
    """A phase change the table does not allow: the core is broken."""

    def __init__(self, old: Phase, new: Phase, trigger: Trigger, why: str) -> None:
        allowed = EDGES.get((old, new), ())
        if allowed:
            detail = f"that edge is allowed only by {[t.value for t in allowed]}"
        else:
            detail = "that edge is not in the transition table"
        super().__init__(f"illegal phase change {old.name} -> {new.name} by "
                         f"{trigger.value} ({why}): {detail}")
        self.old, self.new, self.trigger, self.why = old, new, trigger, why


def check_transition(old: Phase, new: Phase, trigger: Trigger, why: str) -> None:
    """Raise :class:`IllegalTransition` unless ``trigger`` may take ``old`` to ``new``."""
    t = BY_TRIGGER[trigger]
    if new is not t.target or old not in t.sources:
        raise IllegalTransition(old, new, trigger, why)


# ------------------------------------------------------------ invariants
class PhaseState(Protocol):
    """What the invariants read of a core."""

    @property
    def me(self) -> int: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def liveset(self) -> HostSet | None: ...
    @property
    def proposal(self) -> HostSet | None: ...
    @property
    def rule2(self) -> bool: ...
    @property
    def is_master(self) -> bool: ...
    @property
    def master_hint(self) -> int | None: ...
    @property
    def statefile_mode(self) -> bool: ...


@dataclass(frozen=True)
class Invariant:
    name: str
    text: str
    holds: Callable[[PhaseState], bool]


def _joining_iff_no_liveset(s: PhaseState) -> bool:
    return s.phase is Phase.EXCLUDED or (s.phase is Phase.JOINING) == (s.liveset is None)


def _member_of_own_liveset(s: PhaseState) -> bool:
    return not s.phase.armed or (s.liveset is not None and s.me in s.liveset)


def _proposed_iff_proposal(s: PhaseState) -> bool:
    return not s.phase.armed or (s.phase is Phase.PROPOSED) == (s.proposal is not None)


def _proposal_keeps_me(s: PhaseState) -> bool:
    if s.phase is not Phase.PROPOSED:
        return True
    return (s.proposal is not None and s.liveset is not None
            and s.me in s.proposal and s.proposal <= s.liveset)


def _master_armed(s: PhaseState) -> bool:
    return not s.is_master or (s.phase.armed and not s.rule2 and s.master_hint == s.me)


def _rule2_normal(s: PhaseState) -> bool:
    return not s.rule2 or (s.statefile_mode and s.phase in (Phase.NORMAL, *FINAL))


INVARIANTS: tuple[Invariant, ...] = (
    Invariant("joining-iff-no-liveset",
              "a host has no liveset exactly while JOINING (or EXCLUDED from JOINING)",
              _joining_iff_no_liveset),
    Invariant("member-of-own-liveset", "an armed host is in its own liveset",
              _member_of_own_liveset),
    Invariant("proposed-iff-proposal",
              "an armed host holds a proposal exactly while PROPOSED",
              _proposed_iff_proposal),
    Invariant("proposal-keeps-me",
              "a PROPOSED host's proposal is within its liveset and keeps it",
              _proposal_keeps_me),
    Invariant("master-armed",
              "a master is armed, outside rule-2 mode, and grants itself the lock "
              "(so JOINING, FENCED and EXCLUDED hosts are not masters)",
              _master_armed),
    Invariant("rule2-normal",
              "survival-rule-2 mode exists only in statefile mode, while NORMAL "
              "(or FENCED or EXCLUDED from it)",
              _rule2_normal),
)


class InvariantViolation(RuntimeError):
    """A state the core must never be in after handling an input."""

    def __init__(self, invariant: Invariant, state: PhaseState) -> None:
        liveset = None if state.liveset is None else sorted(state.liveset)
        proposal = None if state.proposal is None else sorted(state.proposal)
        super().__init__(
            f"invariant {invariant.name} violated on host {state.me}: {invariant.text} "
            f"(phase {state.phase.name}, liveset {liveset}, proposal {proposal}, "
            f"rule2 {state.rule2}, master {state.is_master}, grant {state.master_hint})")
        self.invariant = invariant


def check_invariants(state: PhaseState) -> None:
    """Raise :class:`InvariantViolation` for the first invariant ``state`` breaks."""
    for invariant in INVARIANTS:
        if not invariant.holds(state):
            raise InvariantViolation(invariant, state)


# ------------------------------------------------------------ documentation
BEGIN_MARK = ("<!-- BEGIN generated by tools/phase_diagram.py from "
              "hacluster/core/phases.py: do not edit -->")
END_MARK = "<!-- END generated phase diagram -->"


def mermaid() -> str:
    """The state diagram: one arrow per allowed edge, labelled with its triggers."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL.name}"]
    for (old, new), triggers in EDGES.items():
        lines.append(f"    {old.name} --> {new.name}: {', '.join(t.value for t in triggers)}")
    lines.extend(f"    {p.name} --> [*]" for p in sorted(FINAL))
    return "\n".join(lines)


def _phases(phases: frozenset[Phase]) -> str:
    if phases == ARMED:
        return "any armed phase"
    if phases == frozenset(Phase) - FINAL:
        return "any but FENCED, EXCLUDED"
    return ", ".join(p.name for p in sorted(phases))


def doc_block() -> str:
    """The generated part of docs/design.md: diagram, triggers, invariants."""
    rows = [f"| `{t.trigger.value}` | {_phases(t.sources)} | {t.target.name} | {t.text} |"
            for t in TRANSITIONS]
    invariants = [f"- `{i.name}`: {i.text}." for i in INVARIANTS]
    return "\n".join([
        BEGIN_MARK, "", "```mermaid", mermaid(), "```", "",
        "| trigger | from | to | when |", "|---|---|---|---|", *rows, "",
        "Invariants, checked after every input the core handles:", "", *invariants,
        "", END_MARK,
    ])


def replace_doc_block(text: str) -> str:
    """``text`` with its generated block (between the markers) regenerated."""
    start, end = text.index(BEGIN_MARK), text.index(END_MARK) + len(END_MARK)
    return text[:start] + doc_block() + text[end:]
