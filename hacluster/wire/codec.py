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
* **Cheap to receive.** Sighting ages travel packed, one little-endian
  signed 32-bit word per host, a negative one meaning none (a host sends
  ``-1``, :data:`NO_AGE`; the core reads every negative age as none), so that
  every byte pattern of the right length is a valid list of ages: the
  decoder checks the length alone and the report reads the words in place (a
  read-only ``memoryview``), decoding only the ages the core asks for. An
  age beyond :data:`MAX_AGE_MS` (24 days) is sent as that maximum. A sealer
  keeps the host sets it decoded, by their bitmap (:data:`VIEW_CACHE` of
  them, forgotten all at once when full): an unchanged view decodes once, and
  every report carrying it shares one set.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import Sequence
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hacluster.core.messages import HostSet, Phase, Report
from hacluster.wire.keys import Keys, Purpose, aead, as_ring
from hacluster.wire.unpack import Malformed, unpack

MAGIC = b"HAC1"
VERSION = 5  # 4: with the liveset epoch and a joiner's cold-start liveset; 5: packed ages
NONCE = 12
TAG = 16
HEADER = len(MAGIC) + 1 + NONCE
MAX_HOSTS = 1024
MAX_SEALED = 16_384
NO_AGE = -1  # what a host sends for "no sighting"; a receiver reads any negative age so
MAX_AGE_MS = 2**31 - 1
VIEW_CACHE = 128  # decoded host sets a sealer keeps, by bitmap (a few MB at most)
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


_BITS = tuple(tuple(b for b in range(8) if byte >> b & 1) for byte in range(256))
_NATIVE_LITTLE = sys.byteorder == "little" and array("i").itemsize == 4


def _hosts_of(bitmap: bytes, width: int) -> HostSet:
    """The hosts of a bitmap of the right size (bits beyond ``width`` ignored)."""
    found: list[int] = []
    for index, byte in enumerate(bitmap):
        if byte:
            base = 8 * index
            if base + 8 > width:
                byte &= (1 << (width - base)) - 1
            found.extend(base + b for b in _BITS[byte])
    return frozenset(found)


def _pack_ages(ages: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(ages)}i", *(max(NO_AGE, min(a, MAX_AGE_MS)) for a in ages))


def _unpack_ages(packed: bytes) -> Sequence[int]:
    """Packed ages as a read-only sequence indexed at C speed, nothing decoded yet."""
    if _NATIVE_LITTLE:
        return memoryview(packed).cast("i")
    return struct.unpack(f"<{len(packed) // 4}i", packed)  # elsewhere: decoded at once


def report_to_fields(report: Report, hosts: int) -> list[Any]:
    """A report as a msgpack-ready list, host sets as bitmaps of ``hosts`` bits."""
    return [
        report.generation, report.sender, report.boot, report.seq, int(report.phase),
        _bitmap(report.liveset, hosts), _bitmap(report.hbdomain, hosts),
        _bitmap(report.sfdomain, hosts), report.statefile_access,
        None if report.proposal is None else _bitmap(report.proposal, hosts),
        report.rule2, report.joining, report.excluded, report.statefile_corrupted,
        report.lock_request, -1 if report.lock_grant is None else report.lock_grant,
        _bitmap(report.join_acks, hosts), _pack_ages(report.hb_age_ms),
        _pack_ages(report.sf_age_ms),
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


def _ages(value: Any, hosts: int, field: str) -> Sequence[int]:
    if not isinstance(value, bytes) or len(value) not in (0, 4 * hosts):
        raise DecodeError(f"{field}: not {hosts} packed ages")
    return _unpack_ages(value)


_PHASES = {p.value: p for p in Phase}
_MAX_PHASE = max(Phase)


def report_from_fields(fields: Any, hosts: int,
                       views: dict[bytes, HostSet] | None = None) -> Report:
    """Strictly rebuild a report; raise :class:`DecodeError` on any deviation.
    ``views``: host sets already decoded, by bitmap (read and added to)."""
    if not isinstance(fields, list) or len(fields) != 22:
        raise DecodeError("not a report record")
    (generation, sender, boot, seq, phase, liveset, hb, sf, access, proposal, rule2, joining,
     excluded, corrupted, request, grant, acks, hb_ages, sf_ages, episode, epoch,
     cold) = fields
    known = _PHASES.get(_int(phase, "phase", 0, _MAX_PHASE))
    if known is None:
        raise DecodeError("phase: unknown")
    grant_value = _int(grant, "lock_grant", -1, hosts - 1)
    cache: dict[bytes, HostSet] = {} if views is None else views
    size = (hosts + 7) // 8

    def _hosts(bitmap: Any, field: str) -> HostSet:
        if not isinstance(bitmap, bytes) or len(bitmap) != size:
            raise DecodeError(f"{field}: bitmap of the wrong size")
        found = cache.get(bitmap)
        if found is None:
            found = cache[bitmap] = _hosts_of(bitmap, hosts)
        return found

    report = Report(
        generation=_int(generation, "generation", 0, MAX_COUNTER),
        sender=_int(sender, "sender", 0, hosts - 1),
        boot=_int(boot, "boot", 0, MAX_COUNTER),
        seq=_int(seq, "seq", 0, MAX_COUNTER),
        phase=known,
        liveset=_hosts(liveset, "liveset"),
        hbdomain=_hosts(hb, "hbdomain"),
        sfdomain=_hosts(sf, "sfdomain"),
        statefile_access=_bool(access, "statefile_access"),
        proposal=None if proposal is None else _hosts(proposal, "proposal"),
        rule2=_bool(rule2, "rule2"),
        joining=_bool(joining, "joining"),
        excluded=_bool(excluded, "excluded"),
        statefile_corrupted=_bool(corrupted, "statefile_corrupted"),
        lock_request=_bool(request, "lock_request"),
        lock_grant=None if grant_value == -1 else grant_value,
        join_acks=_hosts(acks, "join_acks"),
        hb_age_ms=_ages(hb_ages, hosts, "hb_age_ms"),
        sf_age_ms=_ages(sf_ages, hosts, "sf_age_ms"),
        fault_episode=_int(episode, "fault_episode", 0, MAX_COUNTER),
        epoch=_int(epoch, "epoch", 0, MAX_COUNTER),
        cold_liveset=_hosts(cold, "cold_liveset"),
    )
    if len(cache) > VIEW_CACHE:
        cache.clear()
    return report


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
        self._views: dict[bytes, HostSet] = {}  # host sets decoded, by bitmap

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
        return self.decode(body)

    def decode(self, body: bytes) -> Report:
        """The report in an opened (authenticated) body, or :class:`DecodeError`."""
        try:
            fields = unpack(body, MAX_SEALED, items=2 * MAX_HOSTS)
        except Malformed as error:
            raise DecodeError(f"malformed body: {error}") from None
        return report_from_fields(fields, self.hosts, self._views)
