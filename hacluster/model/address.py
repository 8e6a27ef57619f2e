"""Addresses in configuration files (``host:port``), and the error a bad configuration raises.

Shared by the node's configuration (:mod:`hacluster.node.config`) and hactl's
(:mod:`hacluster.mgmt.hactl`), which sits below the node and cannot import it.

Rules: an address is an IPv4 or IPv6 literal and a port 1..65535 (ASCII
digits only), written ``host:port`` with IPv6 in brackets (``[::1]:7000``)
and IPv4 without; ``str()`` gives it back in that form. The host is kept in
its one canonical spelling (``[0:0::1]`` is ``[::1]``), so two spellings of
one address compare equal and a duplicate check sees them. An error names
where the value came from and what is expected.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hacluster.model.tomlfile import brief


class ConfigError(ValueError):
    """A configuration that cannot be used, with the reason."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, where: str) -> Address:
        host, sep, port = text.rpartition(":")
        digits = port.isascii() and port.isdigit() and len(port) <= 5
        if not sep or not digits or not 0 < int(port) < 65536:
            raise ConfigError(f"{where}: expected host:port, got {brief(text)}")
        bracketed = host.startswith("[") and host.endswith("]")
        try:
            ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
        except ValueError:
            raise ConfigError(f"{where}: {brief(host)} is not an IPv4 or IPv6 address") from None
        if bracketed != (ip.version == 6):
            raise ConfigError(f"{where}: write an IPv6 address in brackets ([::1]:7000) and an "
                              f"IPv4 one without, got {brief(text)}")
        return cls(str(ip), int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
