"""Reports on the wire: msgpack inside ChaCha20-Poly1305, bounded before decoding.

Rules:

* A sealed report is ``magic | version | nonce(12) | ciphertext+tag``; the
  header is authenticated as associated data, so nothing of a report is
  trusted before the pool key has verified it. A :class:`Sealer` seals for
  one purpose (heartbeat packets or SR slots) with that purpose's key derived
  from the pool key (:mod:`hacluster.wire.keys`): a packet never opens as a
  slot, nor a slot as a packet. It holds a :class:`~hacluster.wire.keys.KeyRing`:
  it seals with the current key and opens with either accepted key.
* :func:`worst_case_report` is the report whose encoding is longest for a
  pool size (every field at the largest value the decoder accepts);
  :func:`worst_case_sealed_size` its sealed length, from which the SR derives
  the largest pool a slot can hold.
* The size is checked before anything is decoded: a packet longer than
  ``MAX_SEALED`` or shorter than a header and tag is rejected unread.
* Decoding is strict: every field must be present with its type and range,
  host sets are bitmaps no wider than the pool, and unknown versions are
  rejected. Every rejection raises :class:`DecodeError` with a reason, which
  the daemon counts as a drop; the body is decoded by
  :func:`hacluster.wire.unpack.unpack` (every length bounded, no extension
  types, nesting bounded); replay and generation checks are the core's.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hacluster.core.messages import HostSet, Phase, Report
from hacluster.wire.keys import Keys, Purpose, aead, as_ring
from hacluster.wire.unpack import Malformed, unpack

MAGIC = b"HAC1"
VERSION = 4  # 4: with the liveset epoch and a joiner's cold-start liveset
NONCE = 12
TAG = 16
HEADER = len(MAGIC) + 1 + NONCE
MAX_HOSTS = 1024
MAX_SEALED = 16_384
MAX_AGE_MS = 2**31
MAX_COUNTER = 2**64 - 1
SEALING_PURPOSES = (Purpose.HEARTBEAT, Purpose.SLOT)


class DecodeError(ValueError):
    """Input that is not a valid sealed report: dropped and counted."""


def new_pool_key() -> bytes:
    return ChaCha20Poly1305.generate_key()


def _bitmap(hosts: HostSet, width: int) -> bytes:
    out = bytearray((width + 7) // 8)
    for h in hosts:
        out[h // 8] |= 1 << (h % 8)
    return bytes(out)


def _hosts(bitmap: Any, width: int, field: str) -> HostSet:
    if not isinstance(bitmap, bytes) or len(bitmap) != (width + 7) // 8:
        raise DecodeError(f"{field}: bitmap of the wrong size")
    found = frozenset(i for i in range(width) if bitmap[i // 8] >> (i % 8) & 1)
    return found


def report_to_fields(report: Report, hosts: int) -> list[Any]:
    """A report as a msgpack-ready list, host sets as bitmaps of ``hosts`` bits."""
    return [
        report.generation, report.sender, report.boot, report.seq, int(report.phase),
        _bitmap(report.liveset, hosts), _bitmap(report.hbdomain, hosts),
        _bitmap(report.sfdomain, hosts), report.statefile_access,
        None if report.proposal is None else _bitmap(report.proposal, hosts),
        report.rule2, report.joining, report.excluded, report.statefile_corrupted,
        report.lock_request, -1 if report.lock_grant is None else report.lock_grant,
        _bitmap(report.join_acks, hosts), list(report.hb_age_ms), list(report.sf_age_ms),
        report.fault_episode, report.epoch, _bitmap(report.cold_liveset, hosts),
    ]


def _int(value: Any, field: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise DecodeError(f"{field}: not an integer in [{low}, {high}]")
    return value


def _bool(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise DecodeError(f"{field}: not a boolean")
    return value


def _ages(value: Any, hosts: int, field: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) not in (0, hosts):
        raise DecodeError(f"{field}: not a list of {hosts} ages")
    return tuple(_int(a, field, -1, MAX_AGE_MS) for a in value)


def report_from_fields(fields: Any, hosts: int) -> Report:
    """Strictly rebuild a report; raise :class:`DecodeError` on any deviation."""
    if not isinstance(fields, list) or len(fields) != 22:
        raise DecodeError("not a report record")
    (generation, sender, boot, seq, phase, liveset, hb, sf, access, proposal, rule2, joining,
     excluded, corrupted, request, grant, acks, hb_ages, sf_ages, episode, epoch,
     cold) = fields
    if _int(phase, "phase", 0, max(Phase)) not in {p.value for p in Phase}:
        raise DecodeError("phase: unknown")
    grant_value = _int(grant, "lock_grant", -1, hosts - 1)
    return Report(
        generation=_int(generation, "generation", 0, MAX_COUNTER),
        sender=_int(sender, "sender", 0, hosts - 1),
        boot=_int(boot, "boot", 0, MAX_COUNTER),
        seq=_int(seq, "seq", 0, MAX_COUNTER),
        phase=Phase(phase),
        liveset=_hosts(liveset, hosts, "liveset"),
        hbdomain=_hosts(hb, hosts, "hbdomain"),
        sfdomain=_hosts(sf, hosts, "sfdomain"),
        statefile_access=_bool(access, "statefile_access"),
        proposal=None if proposal is None else _hosts(proposal, hosts, "proposal"),
        rule2=_bool(rule2, "rule2"),
        joining=_bool(joining, "joining"),
        excluded=_bool(excluded, "excluded"),
        statefile_corrupted=_bool(corrupted, "statefile_corrupted"),
        lock_request=_bool(request, "lock_request"),
        lock_grant=None if grant_value == -1 else grant_value,
        join_acks=_hosts(acks, hosts, "join_acks"),
        hb_age_ms=_ages(hb_ages, hosts, "hb_age_ms"),
        sf_age_ms=_ages(sf_ages, hosts, "sf_age_ms"),
        fault_episode=_int(episode, "fault_episode", 0, MAX_COUNTER),
        epoch=_int(epoch, "epoch", 0, MAX_COUNTER),
        cold_liveset=_hosts(cold, hosts, "cold_liveset"),
    )


def worst_case_report(hosts: int) -> Report:
    """The report of a ``hosts``-host pool whose encoding is the longest the decoder accepts."""
    everyone = frozenset(range(hosts))
    return Report(
        generation=MAX_COUNTER, sender=hosts - 1, boot=MAX_COUNTER, seq=MAX_COUNTER,
        phase=max(Phase), liveset=everyone, hbdomain=everyone, sfdomain=everyone,
        statefile_access=True, proposal=everyone, rule2=True, joining=True, excluded=True,
        statefile_corrupted=True, lock_request=True, lock_grant=hosts - 1, join_acks=everyone,
        fault_episode=MAX_COUNTER, hb_age_ms=(MAX_AGE_MS,) * hosts,
        sf_age_ms=(MAX_AGE_MS,) * hosts, epoch=MAX_COUNTER, cold_liveset=everyone)


def worst_case_sealed_size(hosts: int) -> int:
    """Bytes of the sealed :func:`worst_case_report` of a ``hosts``-host pool."""
    body = msgpack.packb(report_to_fields(worst_case_report(hosts), hosts), use_bin_type=True)
    return HEADER + len(body) + TAG


class Sealer:
    """Seals and opens reports of a pool of ``hosts`` hosts for one ``purpose``
    (:data:`SEALING_PURPOSES`), with that purpose's key derived from the ring's current
    pool key; it opens with either key of the ring."""

    def __init__(self, keys: Keys, hosts: int, purpose: Purpose) -> None:
        ring = as_ring(keys)
        if purpose not in SEALING_PURPOSES:
            raise ValueError(f"reports are sealed for {[p.name for p in SEALING_PURPOSES]}, "
                             f"not {purpose.name}")
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"a pool has 1 to {MAX_HOSTS} hosts, got {hosts}")
        self.ring = ring
        self._aead = aead(ring.sealing(purpose))
        self.hosts = hosts
        self.purpose = purpose

    @classmethod
    def for_heartbeats(cls, keys: Keys, hosts: int) -> Sealer:
        """The sealer of UDP heartbeat packets."""
        return cls(keys, hosts, Purpose.HEARTBEAT)

    @classmethod
    def for_slots(cls, keys: Keys, hosts: int) -> Sealer:
        """The sealer of reports in the heartbeat SR's slots."""
        return cls(keys, hosts, Purpose.SLOT)

    def seal(self, report: Report) -> bytes:
        header = MAGIC + bytes([VERSION]) + os.urandom(NONCE)
        body = msgpack.packb(report_to_fields(report, self.hosts), use_bin_type=True)
        sealed = header + self._aead.encrypt(header[-NONCE:], body, header[:-NONCE])
        if len(sealed) > MAX_SEALED:
            raise ValueError(f"report of {len(sealed)} bytes exceeds {MAX_SEALED}")
        return sealed

    def open(self, data: bytes) -> Report:
        if not HEADER + TAG <= len(data) <= MAX_SEALED:
            raise DecodeError(f"size {len(data)} outside [{HEADER + TAG}, {MAX_SEALED}]")
        if data[: len(MAGIC)] != MAGIC:
            raise DecodeError("bad magic")
        if data[len(MAGIC)] != VERSION:
            raise DecodeError(f"unknown version {data[len(MAGIC)]}")
        nonce, sealed, header = data[len(MAGIC) + 1 : HEADER], data[HEADER:], data[:len(MAGIC) + 1]
        try:
            body = self.ring.open_with(
                self.purpose, lambda key: aead(key).decrypt(nonce, sealed, header), InvalidTag)
        except InvalidTag:
            raise DecodeError("authentication failed (wrong key or tampered)") from None
        try:
            fields = unpack(body, MAX_SEALED, items=2 * MAX_HOSTS)
        except Malformed as error:
            raise DecodeError(f"malformed body: {error}") from None
        return report_from_fields(fields, self.hosts)
