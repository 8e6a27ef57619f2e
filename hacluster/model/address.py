"""Addresses in configuration files (``host:port``), and the error a bad configuration raises.

Shared by the node's configuration (:mod:`hacluster.node.config`) and hactl's
(:mod:`hacluster.mgmt.hactl`), which sits below the node and cannot import it.

Rules: an address is an IPv4 or IPv6 literal and a port 1..65535, written
``host:port`` with IPv6 in brackets (``[::1]:7000``); ``str()`` gives it back
in that form. An error names where the value came from and what is expected.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


class ConfigError(ValueError):
    """A configuration that cannot be used, with the reason."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, where: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{where}: expected host:port, got {text!r}")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{where}: {host!r} is not an IPv4 or IPv6 address") from None
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
