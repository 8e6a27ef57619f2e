"""The cold-start rules of hacluster.core.coldstart, and the epochs cores publish."""

from __future__ import annotations

from dataclasses import replace

from hacluster.core.coldstart import NOTHING, Newest, missing, newest, next_epoch, recorded
from hacluster.core.events import HeartbeatReceived, SlotsRead, SlotWritten, Tick, WriteSlot
from hacluster.core.messages import Phase, Report
from hacluster.core.node import CoreConfig, HostCore

from ..conftest import armed_core, report

ALL = frozenset({0, 1, 2})


def joiner(sender: int, seq: int, epoch: int, cold: frozenset[int], *,
           hb: frozenset[int] = ALL, sf: frozenset[int] = ALL, boot: int = 2) -> Report:
    return replace(report(sender, seq, boot=boot, phase=Phase.JOINING, liveset=frozenset(),
                          hb=hb, sf=sf), joining=True, epoch=epoch, cold_liveset=cold)


def test_the_newest_epoch_wins_and_one_epoch_unites_its_livesets() -> None:
    older, newer = Newest(3, frozenset({0, 1, 2})), Newest(4, frozenset({0, 1}))
    assert older.merge(newer) == newer and newer.merge(older) == newer
    assert newer.merge(Newest(4, frozenset({1, 2}))) == Newest(4, ALL)
    assert newer.merge(Newest(9, frozenset())) == newer  # records nothing
    assert NOTHING.merge(older) == older


def test_what_a_report_records() -> None:
    member = replace(report(0, 5, liveset=frozenset({0, 1})), epoch=7)
    assert recorded(member) == Newest(7, frozenset({0, 1}))
    last_words = replace(member, phase=Phase.FENCED)
    assert recorded(last_words) == Newest(7, frozenset({0, 1}))
    assert recorded(joiner(1, 3, 6, frozenset({1, 2}))) == Newest(6, frozenset({1, 2}))
    assert recorded(report(0, 5)) == NOTHING  # epoch 0: before epochs, or nothing known
    assert recorded(None) == NOTHING
    assert newest([member, joiner(1, 3, 7, frozenset({2})), None]) == Newest(7, ALL)


def test_a_commit_outranks_every_epoch_seen() -> None:
    assert next_epoch(3, [replace(report(1, 1), epoch=8), None]) == 9
    assert next_epoch(3, []) == 4


def test_missing_names_each_host_that_keeps_the_newest_liveset_from_forming() -> None:
    last = Newest(4, ALL)
    ready = {p: joiner(p, 9, 4, ALL) for p in (1, 2)}
    assert missing(0, last, ALL, ready, ALL, ALL) == {}
    assert "not back" in missing(0, last, ALL, {1: ready[1]}, ALL, ALL)[2]
    frozen = {**ready, 2: report(2, 4)}
    assert "its slot still holds" in missing(0, last, ALL, frozen, frozenset({0, 1}),
                                             frozenset({0, 1}))[2]
    assert "not joining" in missing(0, last, ALL, frozen, ALL, ALL)[2]
    assert "heartbeats" in missing(0, last, ALL, ready, frozenset({0, 1}), ALL)[2]
    assert "slot change" in missing(0, last, ALL, ready, ALL, frozenset({0, 1}))[2]
    other = {**ready, 1: joiner(1, 9, 3, ALL)}
    assert "epoch 3" in missing(0, last, ALL, other, ALL, ALL)[1]
    deaf = {**ready, 1: joiner(1, 9, 4, ALL, hb=frozenset({0, 1}))}
    assert "hosts [2]" in missing(0, last, ALL, deaf, ALL, ALL)[1]


def test_members_publish_their_epoch_and_commits_take_the_next(config: CoreConfig) -> None:
    core = armed_core(config)
    assert core.epoch == 1
    seen = replace(report(1, 1), epoch=5)
    core.handle(HeartbeatReceived(100.1, seen))
    left = replace(report(2, 1, phase=Phase.EXCLUDED), excluded=True)
    core.handle(HeartbeatReceived(100.2, left))
    assert core.liveset == frozenset({0, 1}) and core.epoch == 6


def test_a_joiner_relays_its_last_boots_slot_of_this_generation_only(
        config: CoreConfig) -> None:
    mine = replace(report(1, 40, liveset=frozenset({0, 1})), epoch=3)
    core = HostCore(config, 1, boot=2, now=50.0, previous=mine)
    writes = [o.report for o in core.handle(Tick(50.0)) if isinstance(o, WriteSlot)]
    assert [(r.epoch, r.cold_liveset) for r in writes] == [(3, frozenset({0, 1}))]
    stranger = replace(mine, generation=mine.generation + 1)
    core = HostCore(config, 1, boot=2, now=50.0, previous=stranger)
    writes = [o.report for o in core.handle(Tick(50.0)) if isinstance(o, WriteSlot)]
    assert [(r.epoch, r.cold_liveset) for r in writes] == [(0, frozenset())]


def _run_alone(core: HostCore, start: float, end: float,
               others: dict[int, Report]) -> None:
    """Drive a joiner whose slot I/O succeeds, the other slots holding ``others``."""
    t = start
    while t < end:
        for out in core.handle(Tick(t)):
            if isinstance(out, WriteSlot):
                core.handle(SlotWritten(t, True))
                core.handle(SlotsRead(t, {**others, core.me: out.report}))
        t += core.timing.tick


def _quiet_left(core: HostCore) -> float:
    return core._cold.quiet_since() + core.timing.proof_window - core.now


def test_news_of_an_armed_host_restarts_the_quiet_wait(config: CoreConfig) -> None:
    """A lone joiner of the last liveset waits for the others and for the quiet
    period; an armed heartbeat (an incarnation still alive) starts it again."""
    frozen = {p: replace(report(p, 40), epoch=2) for p in (1, 2)}
    core = HostCore(config, 0, boot=2, now=50.0, previous=replace(report(0, 40), epoch=2))
    window = config.timing.proof_window
    half = 50.0 + window / 2
    _run_alone(core, 50.0, half, frozen)
    assert core.statefile_access
    waits = {w.reason: w for w in core.waits()}
    assert {w.on for w in core.waits() if w.reason == "cold-host"} == {1, 2}
    assert 0 < _quiet_left(core) < window / 2 + config.timing.tick
    assert "news of an armed host" in waits["cold-quiet"].text
    core.handle(HeartbeatReceived(half, replace(report(2, 77), epoch=2)))
    _run_alone(core, half, half + 0.5, frozen)
    assert _quiet_left(core) > window - 1.0
    _run_alone(core, half + 0.5, half + window + 1.0, frozen)
    assert "cold-quiet" not in {w.reason for w in core.waits()}
    assert core.phase is Phase.JOINING  # the others never came back


def test_a_dead_boots_slot_that_lists_and_acks_me_admits_nobody(config: CoreConfig) -> None:
    """A power cut right after host 2 joined: the last slots of hosts 0 and 1 list
    2 and still ack it (it had not armed yet). Host 2's next boot reads them at its
    start, before their next boots write. An ack names an index, not a boot, so
    those slots must not admit it: armed on them, it would pin 0 and 1 to their
    dead boots, then suspect both and fence the pool (found on real processes)."""
    def left_behind(p: int) -> Report:
        return replace(report(p, 40, liveset=ALL), epoch=2, join_acks=frozenset({2}))

    core = HostCore(config, 2, boot=3, now=50.0)
    _run_alone(core, 50.0, 50.0 + config.timing.T, {0: left_behind(0), 1: left_behind(1)})
    assert (core.phase, core.liveset) == (Phase.JOINING, None)
    assert "cold start" in core.waits()[0].text  # the slots are not members it waits on

    # the control: host 0's live boot, acking then listing me, admits me
    t = 50.0 + config.timing.T
    for seq in range(41, 45):
        acked = replace(report(0, seq, liveset=frozenset({0, 1}) if seq < 43 else ALL),
                        epoch=2, join_acks=frozenset({2}))
        core.handle(HeartbeatReceived(t, acked))
        core.handle(Tick(t))
        t += config.timing.tick
    assert (core.phase, core.liveset) == (Phase.NORMAL, ALL)
