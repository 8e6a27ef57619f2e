"""The hosts of a new pool as an operator writes them: ``--hosts ADDR,ADDR,...``.

Rules:

* Hosts are listed in HA index order, separated by commas. ``ADDR`` is an IPv4
  address, an IPv6 address (in brackets when a port follows: ``[fd00::1]:7000``)
  or a host name, with an optional ``:PORT``, the host's heartbeat port
  (default: the pool's). A host on two heartbeat networks is written
  ``A1/A2``: one address per network, and every host on the same number.
* A name is resolved once, here, to the first address the resolver prefers
  (``getaddrinfo``): configurations hold addresses, so a heartbeat never waits
  for DNS. The host keeps the name in the pool file (and its directory); a
  host given by address is named ``host<index>``.
* Refused, naming the entry, before anything is written: an empty entry, a
  bad port, a name that does not resolve or is not a host name, an
  unspecified or multicast address, one address
  twice (in any spelling), two hosts whose first address is the same IP (their
  agent and management ports would clash), two hosts with one name, hosts on
  uneven numbers of networks, more than
  :func:`~hacluster.storage.sr.max_pool_hosts` hosts.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from hacluster.model.address import Address, ConfigError
from hacluster.model.tomlfile import brief
from hacluster.storage.sr import BLOCK, max_pool_hosts

NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*")
MAX_NAME = 253  # the longest DNS name


@dataclass(frozen=True)
class NewHost:
    """A host of a new pool: its name and one address per heartbeat network."""

    name: str
    addresses: tuple[Address, ...]


def parse_port(text: str, where: str) -> int:
    """A port 1..65535 in ASCII digits, or :class:`ConfigError`."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536):
        raise ConfigError(f"{where}: a port is a number 1..65535, got {brief(text)}")
    return int(text)


def _split(text: str, where: str) -> tuple[str, str | None, bool]:
    """``(host, port or None, bracketed)`` of ``host``, ``host:port`` or ``[v6]:port``."""
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"{where}: expected [IPv6] or [IPv6]:port, got {brief(text)}")
        return inside, rest[1:] if rest else None, True
    if text.count(":") > 1:  # a bare IPv6 address: no port can follow it
        return text, None, False
    host, colon, port = text.partition(":")
    return host, port if colon else None, False


def _resolve(name: str, where: str) -> str:
    if len(name) > MAX_NAME or not NAME.fullmatch(name.removesuffix(".")):
        raise ConfigError(f"{where}: {brief(name)} is neither an IP address nor a host name")
    try:
        found = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ConfigError(f"{where}: cannot resolve {name!r} ({error}): give its IP "
                          "address instead") from None
    return str(ipaddress.ip_address(str(found[0][4][0]).partition("%")[0]))


def _address(text: str, default_port: int, where: str) -> tuple[Address, str | None]:
    """The address of one ``ADDR`` and the name it was given by (None for an IP)."""
    host, port_text, bracketed = _split(text, where)
    port = default_port if port_text is None else parse_port(port_text, where)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if bracketed:
            raise ConfigError(f"{where}: {brief(host)} in brackets is not an IPv6 "
                              "address") from None
        return Address(_resolve(host, where), port), host.removesuffix(".")
    if bracketed and ip.version != 6:
        raise ConfigError(f"{where}: only IPv6 addresses go in brackets, got {brief(text)}")
    if ip.is_unspecified or ip.is_multicast:
        raise ConfigError(f"{where}: {ip} is not one host's address")
    return Address(str(ip), port), None


def parse_hosts(text: str, heartbeat_port: int) -> list[NewHost]:
    """The hosts of ``--hosts`` text, checked and resolved (see the rules above)."""
    if not text.strip():
        raise ConfigError("--hosts: no host given (ADDR,ADDR,...)")
    entries = [entry.strip() for entry in text.split(",")]
    if len(entries) > max_pool_hosts():
        raise ConfigError(f"--hosts: {len(entries)} hosts; a pool has at most "
                          f"{max_pool_hosts()} (the most whose largest report fits a "
                          f"{BLOCK}-byte heartbeat SR slot)")
    hosts: list[NewHost] = []
    for index, entry in enumerate(entries):
        where = f"--hosts entry {index + 1} ({brief(entry)})"
        if not entry or any(not part.strip() for part in entry.split("/")):
            raise ConfigError(f"{where}: empty address")
        parsed = [_address(part.strip(), heartbeat_port, where) for part in entry.split("/")]
        name = next((n for _, n in parsed if n is not None), f"host{index}")
        hosts.append(NewHost(name, tuple(address for address, _ in parsed)))
    _check_together(hosts)
    return hosts


def _check_together(hosts: list[NewHost]) -> None:
    networks = {len(h.addresses) for h in hosts}
    if len(networks) != 1:
        raise ConfigError("--hosts: every host needs an address on each heartbeat network "
                          f"(A1/A2): the entries have {sorted(networks)} addresses")
    seen: dict[Address, str] = {}
    first_ips: dict[str, str] = {}
    names: set[str] = set()
    for host in hosts:
        for address in host.addresses:
            if address in seen:
                raise ConfigError(f"--hosts: {address} is given twice ({seen[address]} and "
                                  f"{host.name})")
            seen[address] = host.name
        ip = host.addresses[0].host
        if ip in first_ips:
            raise ConfigError(f"--hosts: {first_ips[ip]} and {host.name} share the IP {ip}: "
                              "each host needs its own, for its agent and management ports")
        first_ips[ip] = host.name
        if host.name in names:
            raise ConfigError(f"--hosts: two hosts are named {host.name!r}")
        names.add(host.name)
