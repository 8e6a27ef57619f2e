"""Unit tests of one host's state machine, driven with hand-made inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from hacluster.core.events import (
    Fence,
    HeartbeatReceived,
    Input,
    LivesetCommitted,
    PetWatchdog,
    SendHeartbeat,
    Shutdown,
    SlotCorrupt,
    SlotsRead,
    SlotWritten,
    Suspect,
    Tick,
    Waiting,
    Wakeup,
    WriteSlot,
)
from hacluster.core.messages import Phase
from hacluster.core.node import CoreConfig, HostCore

from ..conftest import armed_core, report


def kinds(outputs: Sequence[object]) -> list[str]:
    return [type(o).__name__ for o in outputs]


def test_every_call_ends_with_one_wakeup(config: CoreConfig) -> None:
    core = armed_core(config)
    for event in (Tick(100.0), HeartbeatReceived(100.1, report(1, 1)), Tick(100.2)):
        out = core.handle(event)
        assert isinstance(out[-1], Wakeup)
        assert sum(isinstance(o, Wakeup) for o in out) == 1
        assert out[-1].at > event.now


def test_first_tick_beats_writes_reads_and_pets(config: CoreConfig) -> None:
    out = armed_core(config).handle(Tick(100.0))
    names = kinds(out)
    assert "SendHeartbeat" in names and "WriteSlot" in names and "ReadSlots" in names
    pets = [o for o in out if isinstance(o, PetWatchdog)]
    assert pets and all(p.timeout == pytest.approx(config.timing.lease) for p in pets)
    beat = next(o for o in out if isinstance(o, SendHeartbeat))
    assert beat.to == {1, 2}


def test_wrong_generation_and_replays_are_dropped_and_counted(config: CoreConfig) -> None:
    core = armed_core(config)
    core.handle(HeartbeatReceived(100.0, report(1, 5)))
    before = core.peers[1].last_net
    core.handle(HeartbeatReceived(101.0, report(1, 5)))  # replay
    core.handle(HeartbeatReceived(101.0, report(1, 4)))  # older
    core.handle(HeartbeatReceived(101.0, report(1, 9, generation=1)))
    assert core.counters.stale == 2
    assert core.counters.wrong_generation == 1
    assert core.peers[1].last_net == before


def test_foreign_writer_and_corrupt_slots_are_not_seen(config: CoreConfig) -> None:
    core = armed_core(config)
    slots = {0: None, 1: SlotCorrupt("checksum"), 2: report(1, 3)}  # slot 2 written by 1
    core.handle(SlotsRead(100.0, slots))
    assert core.counters.corrupt_slots == 1
    assert core.counters.foreign_sender == 1


def test_fence_request_from_a_member_fences_at_once(config: CoreConfig) -> None:
    core = armed_core(config, me=2)
    request = report(0, 7, phase=Phase.PROPOSED, proposal=frozenset({0, 1}))
    out = core.handle(HeartbeatReceived(100.1, request))
    fence = [o for o in out if isinstance(o, Fence)]
    assert fence and "fence request from host 0" in fence[0].reason
    assert core.phase is Phase.FENCED
    assert core.handle(Tick(101.0)) == [Wakeup(float("inf"))]


def test_a_stalled_daemon_fences_itself_on_waking(config: CoreConfig) -> None:
    core = armed_core(config)
    core.handle(Tick(100.0))
    out = core.handle(Tick(100.0 + config.timing.stall_limit + 0.1))
    assert any(isinstance(o, Fence) and "stalled" in o.reason for o in out)


def test_silence_leads_to_a_fault_and_no_petting(config: CoreConfig) -> None:
    core = armed_core(config)
    t = 100.0
    while t < 100.0 + config.timing.T + 0.5:
        t += config.timing.tick
        out = core.handle(Tick(t))
        if core.phase.in_fault:
            assert not any(isinstance(o, PetWatchdog) for o in out)
    assert core.phase is not Phase.NORMAL


def test_host_missing_everywhere_is_removed_after_the_window(config: CoreConfig) -> None:
    """Hosts 0 and 1 keep talking (network and slots); host 2 goes silent at 100."""
    core = armed_core(config, me=0)
    t, seq = 100.0, 0
    outputs: list[tuple[float, object]] = []
    slot_of_1 = report(1, 0)
    while t < 100.0 + 3 * config.timing.T:
        t += config.timing.tick
        seq += 1
        lost_2 = t > 100.0 + config.timing.T
        peer = report(1, seq, hb=frozenset({0, 1}) if lost_2 else frozenset({0, 1, 2}),
                      sf=frozenset({0, 1}) if lost_2 else frozenset({0, 1, 2}))
        pending: list[Input] = [HeartbeatReceived(t, peer), Tick(t)]
        if t <= 100.0 + config.timing.tick:  # host 2 showed up, then went silent
            pending.insert(0, HeartbeatReceived(t, report(2, 1)))
        while pending:
            for o in core.handle(pending.pop(0)):
                outputs.append((t, o))
                if isinstance(o, WriteSlot):
                    slot_of_1 = peer
                    pending.append(SlotWritten(t, True))
                    pending.append(SlotsRead(t, {0: o.report, 1: slot_of_1, 2: report(2, 1)}))
    commits = [(when, o) for when, o in outputs if isinstance(o, LivesetCommitted)]
    assert len(commits) == 1
    when, commit = commits[0]
    assert commit.removed == {2} and commit.liveset == {0, 1}
    # host 2 was last seen at 100: not removed before T + fence window
    assert when >= 100.0 + config.timing.T + config.timing.fence_window
    assert not any(isinstance(o, Fence) for _, o in outputs)


def test_shutdown_publishes_excluded_and_disarms(config: CoreConfig) -> None:
    core = armed_core(config)
    out = core.handle(Shutdown(100.0))
    assert "Disarmed" in kinds(out)
    beats = [o for o in out if isinstance(o, SendHeartbeat)]
    assert beats and beats[0].report.excluded


def test_joiner_arms_its_watchdog_before_announcing_itself(config: CoreConfig) -> None:
    core = HostCore(config, 1, boot=2, now=50.0)
    out = core.handle(Tick(50.0))
    assert core.phase is Phase.JOINING and core.liveset is None
    pet = next(i for i, o in enumerate(out) if isinstance(o, PetWatchdog))
    beat = next(i for i, o in enumerate(out) if isinstance(o, SendHeartbeat))
    assert pet < beat
    announced = out[beat]
    assert isinstance(announced, SendHeartbeat)
    assert announced.report.joining and not announced.report.liveset


def test_a_removed_hosts_late_last_words_do_not_block_its_next_boot(
        config: CoreConfig) -> None:
    """Host 2 (boot 1) goes silent and is removed; then its last words arrive
    (it woke from a freeze and fenced) and only then its next boot (2) asks to
    join. The late report of the dead boot must not stop boot 2 from counting:
    it must enter my domains (the first condition of a join ack)."""
    core = armed_core(config, me=0)
    t, seq = 100.0, 0
    removed_at = None
    counted = False
    while t < 100.0 + 8 * config.timing.T and not counted:
        t += config.timing.tick
        seq += 1
        gone = t > 100.0 + config.timing.T  # host 1 stops seeing host 2 too
        hosts = frozenset({0, 1}) if gone else frozenset({0, 1, 2})
        pending: list[Input] = [HeartbeatReceived(t, report(1, seq, liveset=core.liveset
                                                            or hosts, hb=hosts, sf=hosts))]
        if not gone:
            pending.append(HeartbeatReceived(t, report(2, seq)))
        if removed_at is not None:
            if t < removed_at + config.timing.tick * 2:
                pending.append(HeartbeatReceived(t, report(2, 10**6, boot=1,
                                                           phase=Phase.FENCED)))
            else:
                reborn = replace(report(2, seq, boot=2, phase=Phase.JOINING,
                                        liveset=frozenset(), hb=frozenset({0, 1, 2}),
                                        sf=frozenset({0, 1, 2})), joining=True)
                pending.append(HeartbeatReceived(t, reborn))
        pending.append(Tick(t))
        while pending:
            for o in core.handle(pending.pop(0)):
                if isinstance(o, LivesetCommitted) and o.removed == {2}:
                    removed_at = t
                if isinstance(o, WriteSlot):
                    slots = {0: o.report, 1: report(1, seq, hb=hosts, sf=hosts)}
                    if removed_at is not None and t >= removed_at + config.timing.tick * 2:
                        slots[2] = replace(report(2, seq, boot=2, phase=Phase.JOINING,
                                                  liveset=frozenset()), joining=True)
                    pending += [SlotWritten(t, True), SlotsRead(t, slots)]
        if removed_at is not None and 2 in core.hbdomain & core.sfdomain:
            counted = True
    assert removed_at is not None, "host 2 was never removed"
    assert counted, (f"boot 2 of host 2 never counted: domains {sorted(core.hbdomain)}"
                     f"/{sorted(core.sfdomain)}, pinned {core.peers[2].pinned_boot}")


def test_a_lone_joiner_says_once_that_it_waits_for_an_armed_host(config: CoreConfig) -> None:
    core = HostCore(config, 1, boot=2, now=50.0)
    said = [o for o in core.handle(Tick(50.0)) if isinstance(o, Waiting)]
    assert len(said) == 1 and [w.on for w in said[0].waits] == [None]
    assert "none heard" in said[0].waits[0].text
    assert not [o for o in core.handle(Tick(50.5)) if isinstance(o, Waiting)]  # no change


def test_a_joiner_names_the_member_that_does_not_ack_it_and_why(config: CoreConfig) -> None:
    core = HostCore(config, 1, boot=2, now=50.0)
    core.handle(HeartbeatReceived(50.1, report(0, 5, liveset=frozenset({0, 2}),
                                               hb=frozenset({0, 2}))))
    (wait,) = [w for w in core.waits() if w.on == 0]
    assert wait.reason == "no-ack" and "does not hear my heartbeats" in wait.text
    core.handle(HeartbeatReceived(50.2, report(0, 6, phase=Phase.PROPOSED,
                                               liveset=frozenset({0, 2}),
                                               proposal=frozenset({0}))))
    (wait,) = [w for w in core.waits() if w.on == 0]
    assert "PROPOSED" in wait.text


def test_a_fenced_boots_last_words_outlive_its_next_boots_reports(config: CoreConfig) -> None:
    """Host 2's boot 1 (the member) fences; boot 2 then announces a join. The
    freshest report is boot 2's, but boot 1's last words still count for it."""
    core = armed_core(config, me=0)
    core.handle(HeartbeatReceived(100.0, report(2, 3)))
    core.handle(HeartbeatReceived(100.1, report(2, 4, phase=Phase.FENCED)))
    reborn = replace(report(2, 1, boot=2, phase=Phase.JOINING, liveset=frozenset()),
                     joining=True)
    core.handle(HeartbeatReceived(100.2, reborn))
    peer = core.peers[2]
    assert peer.report is not None and peer.report.boot == 2
    assert peer.pinned_boot == 1 and peer.fenced_boot == 1


def _run_with_host_1(core: HostCore, until: float, start: float = 100.0,
                     host_2_from: float | None = None) -> list[tuple[float, object]]:
    """Host 1 talks on both channels all along; host 2 says nothing (before
    ``host_2_from``, if given: from then on it talks too)."""
    t, seq = start, 0
    outputs: list[tuple[float, object]] = []
    tick = core.timing.tick
    while t < until:
        t += tick
        seq += 1
        liveset = core.liveset or frozenset()
        one = report(1, seq, liveset=liveset, hb=core.hbdomain | {0, 1},
                     sf=core.sfdomain | {0, 1})
        pending: list[Input] = [HeartbeatReceived(t, one)]
        talking_2 = host_2_from is not None and t >= host_2_from
        if talking_2:
            pending.append(HeartbeatReceived(t, report(2, seq)))
        pending.append(Tick(t))
        while pending:
            for o in core.handle(pending.pop(0)):
                outputs.append((t, o))
                if isinstance(o, WriteSlot):
                    slots = {0: o.report, 1: one}
                    if talking_2:
                        slots[2] = report(2, seq)
                    pending += [SlotWritten(t, True), SlotsRead(t, slots)]
    return outputs


def test_ha_enable_waits_its_grace_for_a_member_that_never_showed_up(
        config: CoreConfig) -> None:
    """At HA enable every member is taken for starting until it first shows up:
    host 2, never heard, is neither suspected nor removed during the grace
    (the pool's hosts arm one by one); once the grace is over it is missing as
    usual, and removed."""
    core = armed_core(config, me=0)
    grace = config.timing.enable_grace
    assert grace >= 2 * config.timing.T
    outputs = _run_with_host_1(core, 100.0 + grace - 0.5)
    assert not [o for _, o in outputs if isinstance(o, Suspect)], "suspected while starting"
    assert core.phase is Phase.NORMAL and core.liveset == frozenset({0, 1, 2})
    outputs = _run_with_host_1(core, 100.0 + grace + 4 * config.timing.T,
                               start=100.0 + grace - 0.5)
    suspected = [(when, o) for when, o in outputs if isinstance(o, Suspect) and o.host == 2]
    assert suspected and suspected[0][0] >= 100.0 + grace
    commits = [(when, o) for when, o in outputs if isinstance(o, LivesetCommitted)]
    # (only the first: this fake host 1 never commits anything itself)
    assert commits and commits[0][1].removed == {2} and commits[0][1].liveset == {0, 1}
    assert commits[0][0] >= 100.0 + grace
    assert not any(isinstance(o, Fence) for when, o in outputs if when <= commits[0][0])


def test_a_late_starter_that_shows_up_within_the_grace_is_kept(config: CoreConfig) -> None:
    """Host 2 arms 3·T after host 0 (a large pool starting on a busy machine):
    it is kept, with no fault handler at all."""
    core = armed_core(config, me=0)
    outputs = _run_with_host_1(core, 100.0 + 8 * config.timing.T,
                               host_2_from=100.0 + 3 * config.timing.T)
    assert not [o for _, o in outputs if isinstance(o, Suspect)]
    assert core.phase is Phase.NORMAL and core.liveset == frozenset({0, 1, 2})
    assert not [o for _, o in outputs if isinstance(o, LivesetCommitted)]
