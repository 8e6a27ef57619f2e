"""Where a host's services are reached: its own addresses, network by network."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hacluster.deploy.poolfiles import write_hactl
from hacluster.model.address import Address
from hacluster.node.roster import Roster


def two_networks(hosts: int, second: str) -> list[tuple[Address, ...]]:
    return [(Address(f"10.77.1.{i + 1}", 7000), Address(second.format(i + 1), 7001 + i))
            for i in range(hosts)]


def test_service_hosts_are_a_hosts_own_ips_first_network_first() -> None:
    roster = Roster.seed(two_networks(3, "10.78.1.{}"), ["a", "b", "c"], ["a", "b", "c"], 8)
    assert roster.service_hosts(1) == ["10.77.1.2", "10.78.1.2"]
    assert roster.service_hosts(7) == []  # not a member


def test_an_address_hosts_share_names_none_of_them() -> None:
    # the local lab's second network: every host on ::1, told apart by port only
    roster = Roster.seed(two_networks(3, "::1"), ["a", "b", "c"], ["a", "b", "c"], 8)
    assert roster.service_hosts(0) == ["10.77.1.1"]
    same = Roster.seed([(Address("10.0.0.1", 1), Address("10.0.0.1", 2))], ["a"], ["a"], 1)
    assert same.service_hosts(0) == ["10.0.0.1"]  # one IP on two networks: listed once


def test_hactl_toml_lists_every_host_on_each_of_its_networks(tmp_path: Path) -> None:
    write_hactl(tmp_path / "a.toml", two_networks(2, "10.78.1.{}"), 7100, "ca.pem", "s")
    servers = tomllib.loads((tmp_path / "a.toml").read_text())["servers"]
    assert servers == ["10.77.1.1:7100", "10.78.1.1:7100", "10.77.1.2:7100", "10.78.1.2:7100"]
    write_hactl(tmp_path / "b.toml", two_networks(2, "::1"), 7100, "ca.pem", "s")
    assert tomllib.loads((tmp_path / "b.toml").read_text())["servers"] == [
        "10.77.1.1:7100", "10.77.1.2:7100"]
