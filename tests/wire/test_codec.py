"""Sealed reports: round trip, and every kind of bad input rejected, never crashing."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster.core.messages import Phase, Report
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
    assert opened.hb_age_ms == report.hb_age_ms


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
