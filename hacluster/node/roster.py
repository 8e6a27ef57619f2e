"""Who holds which HA index: the node's view of the pool's members.

Rules:

* A :class:`Roster` maps each member's HA index to its uuid and heartbeat
  addresses, within the generation's index space (``slots``, the SR's slot
  count). ``version`` is the version of the member table it came from
  (:mod:`hacluster.storage.members`); 0 is the roster the configuration
  seeds (node.toml's ``hosts``, the pool file's uuids in index order).
* The SR's member table, when the SR holds one for the running generation,
  overrides the seed: a node started from an old configuration still sees
  the pool as it is now. A newer table replaces the roster whole; an older
  or equal one changes nothing.
* A host's **service addresses** (:meth:`Roster.service_hosts`: where its
  agent and management API are reached, one per network, the first network
  first) are its heartbeat IPs that no other member shares: an address two
  hosts share (a lab's ``::1``) cannot name one host.
* Every address in a table is checked as a configuration address is; a table
  that does not parse, or lists another number of heartbeat networks than
  this host has, is refused with the reason (and the roster is kept).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hacluster.model.address import Address, ConfigError
from hacluster.storage.members import Member, MembersError, MemberTable


@dataclass(frozen=True)
class Roster:
    slots: int
    version: int
    addresses: Mapping[int, tuple[Address, ...]]  # member index -> one address per network
    uuids: Mapping[int, str]
    names: Mapping[int, str]

    @property
    def members(self) -> frozenset[int]:
        return frozenset(self.addresses)

    def holds(self, index: int, uuid: str) -> bool:
        """Whether host ``uuid`` holds ``index`` (not: a free index, or another host's)."""
        return self.uuids.get(index) == uuid

    def index_of(self, uuid: str) -> int | None:
        return next((i for i, u in self.uuids.items() if u == uuid), None)

    def others(self, me: int) -> frozenset[int]:
        return self.members - {me}

    def service_hosts(self, index: int) -> list[str]:
        """Host ``index``'s IPs, one per network, but those another member also has."""
        shared = {a.host for i, row in self.addresses.items() if i != index for a in row}
        own = [a.host for a in self.addresses.get(index, ())]
        return [host for n, host in enumerate(own) if host not in shared and host not in own[:n]]

    def peer_hosts(self, me: int, network: int) -> frozenset[str]:
        """The IPs heartbeats may come from on ``network``: every other member's."""
        return frozenset(a[network].host for i, a in self.addresses.items() if i != me)

    @classmethod
    def seed(cls, hosts: Sequence[tuple[Address, ...]], uuids: Sequence[str],
             names: Sequence[str], slots: int) -> Roster:
        """The roster a configuration lists: host ``i`` at index ``i``."""
        return cls(slots, 0, dict(enumerate(hosts)), dict(enumerate(uuids)),
                   dict(enumerate(names)))

    @classmethod
    def from_table(cls, table: MemberTable, networks: int) -> Roster:
        """The roster of an SR member table; :class:`MembersError` if it cannot be used."""
        addresses: dict[int, tuple[Address, ...]] = {}
        for m in table.members:
            try:
                parsed = tuple(Address.parse(a, f"member table: host {m.name}")
                               for a in m.addresses)
            except ConfigError as error:
                raise MembersError(str(error)) from None
            if len(parsed) != networks:
                raise MembersError(f"member table: host {m.name} has {len(parsed)} heartbeat "
                                   f"addresses, this host {networks}")
            addresses[m.index] = parsed
        return cls(table.capacity, table.version, addresses,
                   {m.index: m.uuid for m in table.members},
                   {m.index: m.name for m in table.members})

    def table(self, generation: int) -> MemberTable:
        """This roster as a member table of ``generation`` (the master's first write)."""
        return MemberTable(generation, self.version, self.slots, tuple(
            Member(i, self.uuids[i], self.names.get(i, self.uuids[i]),
                   tuple(str(a) for a in self.addresses[i]))
            for i in sorted(self.addresses)))
