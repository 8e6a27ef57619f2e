"""--hosts as an operator writes it: addresses, ports, names, two networks, refusals."""

from __future__ import annotations

import pytest

from hacluster.deploy.hostlist import parse_hosts
from hacluster.model.address import Address, ConfigError
from hacluster.storage.sr import max_pool_hosts


def test_addresses_ports_and_networks() -> None:
    hosts = parse_hosts("10.0.0.1, 10.0.0.2:7100,[fd00::3]:7200,fd00::4", 7000)
    assert [h.name for h in hosts] == ["host0", "host1", "host2", "host3"]
    assert [h.addresses for h in hosts] == [
        (Address("10.0.0.1", 7000),), (Address("10.0.0.2", 7100),),
        (Address("fd00::3", 7200),), (Address("fd00::4", 7000),)]
    two = parse_hosts("10.0.0.1/10.1.0.1:7005,10.0.0.2/[fd01::2]", 7000)
    assert [str(a) for a in two[1].addresses] == ["10.0.0.2:7000", "[fd01::2]:7000"]
    assert two[0].addresses[1] == Address("10.1.0.1", 7005)


def test_a_name_is_resolved_once_and_kept_as_the_host_name() -> None:
    (host,) = parse_hosts("localhost:7300", 7000)
    assert host.name == "localhost"
    assert host.addresses[0] in (Address("127.0.0.1", 7300), Address("::1", 7300))


@pytest.mark.parametrize(("text", "message"), [
    ("", "no host given"),
    ("10.0.0.1,,10.0.0.2", "entry 2 .* empty address"),
    ("10.0.0.1/", "empty address"),
    ("10.0.0.1:0", "a port is a number 1..65535"),
    ("10.0.0.1:65536", "a port is a number 1..65535"),
    ("10.0.0.1:http", "a port is a number 1..65535"),
    ("10.0.0.1:\u0667\u0660\u0660\u0660", "a port is a number 1..65535"),  # Arabic-Indic
    ("[::1]:7000,[0:0::1]:7000", r"\[::1\]:7000 is given twice"),
    ("10.0.0.1:7000,10.0.0.1:7001", "share the IP 10.0.0.1"),
    ("10.0.0.1/10.1.0.1,10.0.0.2", "each heartbeat network"),
    ("no-such-host.invalid", "cannot resolve 'no-such-host.invalid'"),
    ("bad_name!", "neither an IP address nor a host name"),
    ("[10.0.0.1]:7000", "only IPv6 addresses go in brackets"),
    ("[fd00::1", r"expected \[IPv6\]"),
    ("[fd00::1]x", r"expected \[IPv6\]"),
    ("[name]:7000", "in brackets is not an IPv6"),
    ("0.0.0.0", "not one host's address"),
    ("224.0.0.1", "not one host's address"),
])
def test_bad_host_lists_are_refused_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_hosts(text, 7000)


def test_two_hosts_with_one_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="two hosts are named 'localhost'"):
        parse_hosts("127.0.0.5/localhost:7001,127.0.0.6/localhost:7002", 7000)


def test_more_hosts_than_a_slot_holds_are_refused() -> None:
    limit = max_pool_hosts()
    text = ",".join(f"10.{i // 250}.{i % 250}.1" for i in range(limit + 1))
    with pytest.raises(ConfigError, match=f"a pool has at most {limit}"):
        parse_hosts(text, 7000)
    assert len(parse_hosts(text.rpartition(",")[0], 7000)) == limit
