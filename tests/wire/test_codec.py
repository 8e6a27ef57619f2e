"""Sealed reports: round trip, and every kind of bad input rejected, never crashing."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster.core.messages import Phase, Report
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.timing import Timing
from hacluster.wire import codec
from hacluster.wire.codec import MAX_SEALED, DecodeError, Sealer, new_pool_key

HOSTS = 12
KEY = new_pool_key()
SEALER = Sealer.for_heartbeats(KEY, HOSTS)
host_sets = st.frozensets(st.integers(0, HOSTS - 1))
ages = st.lists(st.integers(-1, 10**6), min_size=HOSTS, max_size=HOSTS).map(tuple)


@st.composite
def reports(draw: st.DrawFn) -> Report:
    return Report(
        generation=draw(st.integers(0, 2**64 - 1)), sender=draw(st.integers(0, HOSTS - 1)),
        boot=draw(st.integers(0, 2**32)), seq=draw(st.integers(0, 2**40)),
        phase=draw(st.sampled_from(Phase)), liveset=draw(host_sets), hbdomain=draw(host_sets),
        sfdomain=draw(host_sets), statefile_access=draw(st.booleans()),
        proposal=draw(st.none() | host_sets), rule2=draw(st.booleans()),
        joining=draw(st.booleans()), excluded=draw(st.booleans()),
        statefile_corrupted=draw(st.booleans()), lock_request=draw(st.booleans()),
        lock_grant=draw(st.none() | st.integers(0, HOSTS - 1)), join_acks=draw(host_sets),
        hb_age_ms=draw(ages), sf_age_ms=draw(ages), fault_episode=draw(st.integers(0, 2**40)),
        epoch=draw(st.integers(0, 2**64 - 1)), cold_liveset=draw(host_sets),
    )


@settings(max_examples=300, derandomize=True, database=None)
@given(reports())
def test_round_trip(report: Report) -> None:
    opened = SEALER.open(SEALER.seal(report))
    assert opened == report
    assert tuple(opened.hb_age_ms) == report.hb_age_ms


@settings(max_examples=200, derandomize=True, database=None)
@given(reports())
def test_wrong_key_is_rejected(report: Report) -> None:
    with pytest.raises(DecodeError, match="authentication failed"):
        Sealer.for_heartbeats(new_pool_key(), HOSTS).open(SEALER.seal(report))


@settings(max_examples=300, derandomize=True, database=None)
@given(reports(), st.data())
def test_any_flipped_byte_is_rejected(report: Report, data: st.DataObject) -> None:
    sealed = bytearray(SEALER.seal(report))
    index = data.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecodeError):
        SEALER.open(bytes(sealed))


@settings(max_examples=300, derandomize=True, database=None)
@given(reports(), st.data())
def test_truncated_packets_are_rejected(report: Report, data: st.DataObject) -> None:
    sealed = SEALER.seal(report)
    cut = data.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(DecodeError):
        SEALER.open(sealed[:cut])


def test_oversized_packets_are_rejected_unread() -> None:
    with pytest.raises(DecodeError, match="size"):
        SEALER.open(b"HAC1\x01" + bytes(MAX_SEALED))


@settings(max_examples=1000, derandomize=True, database=None)
@given(st.binary(max_size=MAX_SEALED + 10))
def test_random_bytes_never_crash(data: bytes) -> None:
    with pytest.raises(DecodeError):
        SEALER.open(data)


@settings(max_examples=500, derandomize=True, database=None)
@given(st.from_type(object).filter(lambda v: not isinstance(v, list)) | st.lists(
    st.one_of(st.integers(), st.booleans(), st.binary(max_size=4), st.none(), st.text()),
    min_size=0, max_size=25))
def test_authenticated_but_malformed_bodies_are_rejected(fields: object) -> None:
    """A holder of the key who sends garbage still cannot crash the decoder."""
    try:
        body = msgpack.packb(fields, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return  # not encodable: nobody can send it
    header = codec.MAGIC + bytes([codec.VERSION]) + bytes(codec.NONCE)
    sealed = header + SEALER._aead.encrypt(bytes(codec.NONCE), body, header[:-codec.NONCE])
    with pytest.raises(DecodeError):
        SEALER.open(sealed)


def test_bad_keys_and_sizes_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer.for_heartbeats(b"short", 3)
    with pytest.raises(ValueError, match="1 to"):
        Sealer.for_heartbeats(KEY, 0)


def _sealed_body(fields: object) -> bytes:
    body = msgpack.packb(fields, use_bin_type=True)
    header = codec.MAGIC + bytes([codec.VERSION]) + bytes(codec.NONCE)
    return header + SEALER._aead.encrypt(bytes(codec.NONCE), body, header[:-codec.NONCE])


def _report(**changes: object) -> Report:
    base = dict(generation=7, sender=3, boot=2, seq=9, phase=Phase.NORMAL,
                liveset=frozenset(range(HOSTS)), hbdomain=frozenset(range(HOSTS)),
                sfdomain=frozenset({1, 3, 11}), statefile_access=True,
                hb_age_ms=tuple(range(-1, HOSTS - 1)), sf_age_ms=(-1,) * HOSTS)
    return Report(**{**base, **changes})  # type: ignore[arg-type]


def test_ages_travel_packed_and_are_refused_in_any_other_form() -> None:
    fields = codec.report_to_fields(_report(), HOSTS)
    assert fields[17] == b"".join(a.to_bytes(4, "little", signed=True)
                                  for a in range(-1, HOSTS - 1))
    assert SEALER.open(_sealed_body(fields)) == _report()
    for ages in (list(range(HOSTS)), fields[17][:-1], fields[17] + bytes(4), b"\x00" * 4,
                 None, 5):
        with pytest.raises(DecodeError, match="hb_age_ms: not 12 packed ages"):
            SEALER.open(_sealed_body([*fields[:17], ages, *fields[18:]]))
    empty = codec.report_to_fields(_report(hb_age_ms=(), sf_age_ms=()), HOSTS)
    assert len(SEALER.open(_sealed_body(empty)).hb_age_ms) == 0


def test_a_packet_of_the_previous_version_is_refused_unread() -> None:
    sealed = bytearray(SEALER.seal(_report()))
    sealed[len(codec.MAGIC)] = codec.VERSION - 1
    with pytest.raises(DecodeError, match=f"unknown version {codec.VERSION - 1}"):
        SEALER.open(bytes(sealed))


def test_packed_ages_read_like_the_ages_sent() -> None:
    sent = (-1, 0, 7, 1000, codec.MAX_AGE_MS, -1, 3, 4, 5, 6, 8, 2**31 - 2)
    opened = SEALER.open(SEALER.seal(_report(hb_age_ms=sent))).hb_age_ms
    assert len(opened) == HOSTS and tuple(opened) == sent
    assert opened[0] == -1 and opened[-1] == 2**31 - 2 and opened[4] == codec.MAX_AGE_MS
    assert tuple(opened[2:5]) == sent[2:5]
    with pytest.raises(IndexError):
        opened[HOSTS]
    with pytest.raises(TypeError):
        opened[0] = 5  # type: ignore[index]  # read-only: a report does not change
    clamped = SEALER.open(SEALER.seal(_report(sf_age_ms=(2**40, -9) * (HOSTS // 2))))
    assert tuple(clamped.sf_age_ms) == (codec.MAX_AGE_MS, -1) * (HOSTS // 2)


def test_any_negative_age_reads_as_none_to_the_core() -> None:
    """A key holder may send any negative word: every core reader takes it for none."""
    fields = codec.report_to_fields(_report(), HOSTS)
    fields[17] = b"".join((-7).to_bytes(4, "little", signed=True) for _ in range(HOSTS))
    opened = SEALER.open(_sealed_body(fields))
    assert list(opened.hb_age_ms) == [-7] * HOSTS
    timing = Timing.derive(10)
    core = HostCore(CoreConfig(timing, HOSTS, generation=7), 0, boot=1, now=100.0,
                    liveset=frozenset(range(HOSTS)))
    lacking_me = replace(opened, hbdomain=frozenset(range(1, HOSTS)))
    assert not core._hears_me(lacking_me)
    assert not core._hears_me(replace(lacking_me, hb_age_ms=(-1,) * HOSTS))
    assert core._hears_me(replace(lacking_me, hb_age_ms=(5,) * HOSTS))


def test_an_unchanged_view_decodes_once_and_the_cache_stays_bounded() -> None:
    sealer = Sealer.for_heartbeats(KEY, HOSTS)
    first = sealer.open(SEALER.seal(_report(seq=1)))
    second = sealer.open(SEALER.seal(_report(seq=2, sender=5)))
    assert first.liveset is second.liveset is first.hbdomain
    assert second.sfdomain == frozenset({1, 3, 11}) and second.proposal is None
    sizes = []
    for n in range(0, 2**HOSTS, 3):  # more distinct views than the cache keeps
        views = frozenset(h for h in range(HOSTS) if n >> h & 1)
        assert sealer.open(SEALER.seal(_report(join_acks=views))).join_acks == views
        sizes.append(len(sealer._views))
    assert max(sizes) == codec.VIEW_CACHE and min(sizes[2:]) < 10  # full, then forgotten
    assert sealer.open(SEALER.seal(_report(seq=3))) == _report(seq=3)


def test_bits_beyond_the_pool_are_ignored_as_before() -> None:
    fields = codec.report_to_fields(_report(), HOSTS)
    fields[7] = b"\xff\xff"  # sfdomain: bits 12..15 name no host
    assert SEALER.open(_sealed_body(fields)).sfdomain == frozenset(range(HOSTS))


def test_ages_read_alike_where_the_machine_is_not_little_endian(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _report(hb_age_ms=(-1, 0, 7, codec.MAX_AGE_MS) * (HOSTS // 4))
    native = SEALER.open(SEALER.seal(sent)).hb_age_ms
    monkeypatch.setattr(codec, "_NATIVE_LITTLE", False)
    portable = SEALER.open(SEALER.seal(sent)).hb_age_ms
    assert isinstance(native, memoryview) and isinstance(portable, tuple)
    assert tuple(native) == portable == sent.hb_age_ms
