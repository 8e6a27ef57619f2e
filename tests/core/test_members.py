"""The core's member rules (hacluster.core.host.membership, faults: ejected)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hacluster.core.events import (
    Disarmed,
    Fence,
    HeartbeatReceived,
    LivesetCommitted,
    MembersChanged,
    SendHeartbeat,
    Tick,
)
from hacluster.core.messages import Phase
from hacluster.core.node import CoreConfig, HostCore

from ..conftest import armed_core, report

THREE = frozenset({0, 1, 2})


def test_members_must_be_a_subset_of_the_index_space_holding_me(config: CoreConfig) -> None:
    with pytest.raises(ValueError, match="subset"):
        replace(config, members=frozenset({0, 5}))
    with pytest.raises(ValueError, match="not one of the members"):
        HostCore(replace(config, hosts=4, members=THREE), 3, boot=1, now=0.0)


def test_a_non_member_is_neither_heard_nor_sent_to(config: CoreConfig) -> None:
    """Index 3 is a free slot of the generation: its beats are foreign until it joins."""
    core = armed_core(replace(config, hosts=4, members=THREE))
    core.handle(HeartbeatReceived(100.0, report(3, 1, liveset=frozenset())))
    assert core.counters.foreign_sender == 1 and core.peers[3].report is None
    beats = [o for o in core.handle(Tick(100.5)) if isinstance(o, SendHeartbeat)]
    assert beats and all(b.to == frozenset({1, 2}) for b in beats)
    core.handle(MembersChanged(101.0, THREE | {3}))
    core.handle(HeartbeatReceived(101.0, report(3, 2, liveset=frozenset())))
    assert core.peers[3].report is not None and core.counters.foreign_sender == 1
    beats = [o for o in core.handle(Tick(101.5)) if isinstance(o, SendHeartbeat)]
    assert beats and beats[0].to == frozenset({1, 2, 3})


def test_an_added_index_starts_afresh(config: CoreConfig) -> None:
    """What was known of an index's earlier occupant does not carry over to the next."""
    core = HostCore(replace(config, hosts=4, members=THREE | {3}), 0, boot=1, now=100.0,
                    liveset=THREE)
    core.handle(HeartbeatReceived(100.0, report(3, 50, boot=9, liveset=frozenset())))
    core.handle(MembersChanged(100.1, THREE))
    assert core.members == THREE and core.peers[3].report is None
    core.handle(MembersChanged(100.2, THREE | {3}))
    core.handle(HeartbeatReceived(100.3, report(3, 1, boot=2, liveset=frozenset())))
    assert core.peers[3].report is not None and core.peers[3].report.boot == 2


def test_a_removed_host_still_in_my_liveset_stays_a_member_until_a_commit(
    config: CoreConfig,
) -> None:
    """An eject never removes a live host: it stays until the fault handler (with
    its fence window) or its clean shutdown takes it out of my liveset."""
    core = armed_core(config)
    out = core.handle(MembersChanged(100.0, frozenset({0, 1})))
    assert not any(isinstance(o, LivesetCommitted) for o in out)
    assert core.members == THREE and core.liveset == THREE
    core.handle(HeartbeatReceived(100.1, report(2, 7)))
    assert core.counters.foreign_sender == 0  # still heard
    excluded = replace(report(2, 8), phase=Phase.EXCLUDED, excluded=True)
    out = core.handle(HeartbeatReceived(100.2, excluded))
    commits = [o for o in out if isinstance(o, LivesetCommitted)]
    assert commits and commits[0].removed == {2}
    assert core.members == frozenset({0, 1})
    core.handle(HeartbeatReceived(100.3, report(2, 9)))
    assert core.counters.foreign_sender == 1


def test_an_armed_host_no_longer_a_member_fences(config: CoreConfig) -> None:
    core = armed_core(config, me=2)
    out = core.handle(MembersChanged(100.0, frozenset({0, 1})))
    assert core.phase is Phase.FENCED
    assert any(isinstance(o, Fence) and "ejected" in o.reason for o in out)


def test_a_joiner_no_longer_a_member_just_leaves(config: CoreConfig) -> None:
    core = HostCore(config, 2, boot=1, now=50.0)
    core.handle(Tick(50.0))
    out = core.handle(MembersChanged(51.0, frozenset({0, 1})))
    assert core.phase is Phase.EXCLUDED
    assert any(isinstance(o, Disarmed) for o in out)
    assert not any(isinstance(o, Fence) for o in out)
