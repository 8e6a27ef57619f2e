"""The shipped host firewall (``contrib/nftables/hacluster-host.nft``) on a netns pool.

Every host's namespace runs the file, with its values from the host's own
``node.toml``, before its daemon starts: input policy drop, only the ports
``docs/deploy.md`` lists admitted. The pool must still do everything that
crosses the network: heartbeats (the pool forms), the management API from an
operator (``hactl`` from the root namespace, the bridge's address), the agent
port between hosts (enabling HA arms every host over it; the master pushes
database backups over it), and a failover. A port the file does not admit
stays shut (the agent port, from the operator's address).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hacluster.lab.netns import NetnsLab, sh
from hacluster.node.config import load

from ..conftest import lab_base_port, wait_for
from .test_mgmt_lab import hactl, master, ok

pytestmark = [pytest.mark.slow, pytest.mark.netns]  # netns: skipped without root
T = 3.0
RULES = Path(__file__).resolve().parents[2] / "contrib" / "nftables" / "hacluster-host.nft"
TABLE = "hacluster_host"


class FirewalledLab(NetnsLab):
    """A netns lab whose hosts each run the shipped firewall from before their daemon."""

    def start(self, index: int, armed: bool) -> int:
        ns = self.ns(index)
        if TABLE not in sh("ip", "netns", "exec", ns, "nft", "list", "tables"):
            config = load(self.host_dir(index) / "node.toml")
            assert config.mgmt is not None
            peers = sorted({a.host for row in config.hosts for a in row})
            ports = sorted({a.port for row in config.hosts for a in row})
            prelude = self.host_dir(index) / "firewall.nft"
            prelude.write_text(
                f"define hacluster_hosts = {{ {', '.join(peers)} }}\n"
                f"define hacluster_operators = {{ {self.net}.254 }}\n"
                f"define hacluster_heartbeat = {{ {', '.join(map(str, ports))} }}\n"
                f"define hacluster_agent = {config.agent_port}\n"
                f"define hacluster_mgmt = {config.mgmt.port}\n"
                f'include "{RULES}"\n')
            sh("ip", "netns", "exec", ns, "nft", "-f", str(prelude))
        return super().start(index, armed)


def test_the_shipped_firewall_admits_what_a_pool_needs_and_no_more(tmp_path: Path) -> None:
    lab = FirewalledLab(tmp_path / "lab")
    lab.up(3, T, base_port=lab_base_port(), ha_off=True)
    try:
        for index in range(3):
            listed = sh("ip", "netns", "exec", lab.ns(index), "nft", "list", "table", "inet",
                        TABLE)
            assert "policy drop" in listed
        wait_for(lambda: all(r.get("phase") == "HA_OFF" for r in lab.status()), 10 * T,
                 "every host up with HA off")
        code, out, err = hactl(lab, "pool-ha-enable", f"ha-config:timeout={T:g}")
        assert code == 0 and "HA enabled" in out, err
        wait_for(lambda: master(lab) is not None
                 and all(r.get("liveset") == [0, 1, 2] for r in lab.status()), 15 * T,
                 "a master and every host armed")
        wait_for(lambda: all(min(r["received_per_network"]) > 10 for r in lab.status()), 5 * T,
                 "heartbeats on the network (statefile alone would also elect a master)")

        config = load(lab.host_dir(0) / "node.toml")
        assert config.mgmt is not None
        host = config.address.host
        with socket.create_connection((host, config.mgmt.port), timeout=5):
            pass  # the operator reaches the management port
        with pytest.raises(OSError), socket.create_connection((host, config.agent_port),
                                                              timeout=2):
            pass  # but not a host's agent port

        old = master(lab)
        assert old is not None
        lab.kill(old)
        wait_for(lambda: master(lab) not in (None, old), 15 * T, "a new master")
        wait_for(lambda: hactl(lab, "pool-list")[0] == 0, 10, "the new master to answer")
        assert "ha_host_failed" in ok(lab, "message-list", "name=ha_host_failed")
    finally:
        lab.down()
