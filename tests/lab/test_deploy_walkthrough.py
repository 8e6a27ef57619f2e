"""docs/deploy.md followed end to end on network namespaces, as an operator would.

No lab code runs here: the "machines" are network namespaces on a bridge (the
operator's machine is the root namespace, on the bridge's .254), the shared
LUN is a loop device with direct I/O, and every step is a command the page
gives: ``hacluster pool init``, each host's directory copied to a machine of
its own, the shipped firewall (``contrib/nftables``) loaded in each machine
with values from its ``node.toml``, ``node --check``, the daemons started,
``pool-ha-enable``; then ``pool add-host``, the new machine started waiting,
``pool-join`` run against it; ``pool-eject`` of another host (started again,
it exits 78); a power cut (every daemon killed) and every machine started
again: the pool re-forms with HA on and its protected VMs running, with no
emergency verb. The systemd unit has its own test under a real systemd
(test_systemd_unit.py); this machine has no iSCSI initiator (deploy.md says why).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hacluster.lab.workloads import VM_SR, default_pool, runs
from hacluster.model import poolfile
from hacluster.node.config import load
from hacluster.node.daemon import query_status

from ..conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.netns]
T = 3.0
RULES = Path(__file__).resolve().parents[2] / "contrib" / "nftables" / "hacluster-host.nft"
PROTECTED = {"vm-dhcp", "vm-sql", "vm-web1", "vm-web2"}


def sh(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr or done.stdout}"
    return done.stdout


@dataclass
class Site:
    """The machines: namespaces on a bridge, a loop-device LUN, the operator's files."""

    root: Path
    net: str  # 10.79.N
    loop: str = ""
    machines: dict[int, Path] = field(default_factory=dict)
    pids: dict[int, int] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"hw{self.net.split('.')[-1]}br"

    def ns(self, index: int) -> str:
        return f"hw{self.net.split('.')[-1]}-m{index}"

    def ip(self, index: int) -> str:
        return f"{self.net}.{index + 1}"

    def add_machine(self, index: int) -> None:
        ns = self.ns(index)
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"{ns}v", "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", f"{ns}v", "master", self.bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"{self.ip(index)}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def install(self, index: int, directory: Path) -> Path:
        """Copy a host directory to the machine, as an operator copies it to /etc/hacluster,
        and load the shipped firewall there with the values of its node.toml."""
        machine = self.root / "machines" / directory.name
        shutil.copytree(directory, machine)
        self.machines[index] = machine
        table = (machine / "node.toml").read_text()
        mgmt = int(table.split("mgmt_port = ")[1].split()[0])
        agent = int(table.split("agent_port = ")[1].split()[0])
        prelude = machine / "firewall.nft"
        prelude.write_text(  # the hosts' subnet: a host added later is admitted too
            f"define hacluster_hosts = {{ {self.net}.0/24 }}\n"
            f"define hacluster_operators = {{ {self.net}.254 }}\n"
            f"define hacluster_heartbeat = {{ 7000 }}\n"
            f"define hacluster_agent = {agent}\n"
            f"define hacluster_mgmt = {mgmt}\n"
            f'include "{RULES}"\n')
        sh("ip", "netns", "exec", self.ns(index), "nft", "-f", str(prelude))
        return machine

    def hacluster(self, index: int | None, *words: str) -> subprocess.CompletedProcess[str]:
        inside = ["ip", "netns", "exec", self.ns(index)] if index is not None else []
        return subprocess.run([*inside, sys.executable, "-m", "hacluster", *words],
                              capture_output=True, text=True, timeout=120, cwd=self.root,
                              check=False)

    def hactl(self, *words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hacluster.mgmt.hactl", "--config",
                               str(self.root / "pool" / "operator" / "hactl.toml"), *words],
                              capture_output=True, text=True, timeout=120, check=False)

    def start(self, index: int) -> None:
        machine = self.machines[index]
        with (machine / "node.out").open("ab") as out:
            self.pids[index] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(index), sys.executable, "-m", "hacluster",
                 "node", "--config", str(machine / "node.toml")], stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, cwd=machine).pid

    def kill(self, index: int) -> None:
        pid = self.pids.pop(index)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def exited(self, index: int) -> bool:
        """Whether the daemon of ``index`` has ended (and is reaped: forgotten here)."""
        if os.waitpid(self.pids[index], os.WNOHANG)[0] == 0:
            return False
        del self.pids[index]
        return True

    def status(self, index: int) -> dict[str, Any]:
        try:
            return query_status(self.machines[index] / "status.sock")
        except OSError:
            return {"phase": "DOWN"}

    def settled(self, members: list[int]) -> bool:
        rows = [self.status(i) for i in members]
        return all(r.get("liveset") == members for r in rows) and \
            sum(bool(r.get("master")) for r in rows) == 1

    def master(self, members: list[int]) -> int:
        return next(i for i in members if self.status(i).get("master"))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    taken = sh("ip", "-o", "link", "show") + sh("ip", "netns", "list")
    number = next(n for n in range(20 + os.getpid() % 200, 255) if f"hw{n}br" not in taken)
    place = Site(tmp_path, f"10.79.{number}")
    lun = tmp_path / "lun.img"
    with lun.open("xb") as out:
        out.truncate(64 * 1024 * 1024)
    place.loop = sh("losetup", "--find", "--show", "--direct-io=on", str(lun)).strip()
    sh("ip", "link", "add", place.bridge, "type", "bridge")
    sh("ip", "link", "set", place.bridge, "up")
    sh("ip", "addr", "add", f"{place.net}.254/24", "dev", place.bridge)
    if shutil.which("iptables"):  # a FORWARD policy of DROP (Docker's) must not cut the bridge
        subprocess.run(["iptables", "-I", "FORWARD", "-i", place.bridge, "-o", place.bridge,
                        "-j", "ACCEPT"], check=False, capture_output=True)
    try:
        yield place
    finally:
        for index in list(place.pids):
            place.kill(index)
        for index in range(5):
            subprocess.run(["ip", "netns", "del", place.ns(index)], check=False,
                           capture_output=True)
        subprocess.run(["ip", "link", "del", place.bridge], check=False, capture_output=True)
        if shutil.which("iptables"):
            subprocess.run(["iptables", "-D", "FORWARD", "-i", place.bridge, "-o",
                            place.bridge, "-j", "ACCEPT"], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", place.loop], check=False, capture_output=True)


def test_deploy_md_on_namespaces(site: Site, tmp_path: Path) -> None:
    # Creating a pool
    for index in range(3):
        site.add_machine(index)
    (tmp_path / "vms.toml").write_text(poolfile.dump(default_pool(3)))
    (tmp_path / VM_SR).mkdir()  # the guests' shared disks (an NFS export on real hosts)
    made = site.hacluster(
        None, "pool", "init", "--name", "walk", "--hosts",
        ",".join(site.ip(i) for i in range(3)), "--sr", site.loop, "--out", "pool",
        "--timeout", f"{T:g}", "--pool", "vms.toml", "--vm-dir", str(tmp_path / VM_SR))
    assert made.returncode == 0, made.stderr
    assert "Copy:" in made.stdout and "pool-ha-enable" in made.stdout
    for index in range(3):
        machine = site.install(index, tmp_path / "pool" / "hosts" / f"host{index}")
        checked = site.hacluster(index, "node", "--check", "--config",
                                 str(machine / "node.toml"))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "the medium takes O_DIRECT" in checked.stdout
    for index in range(3):
        site.start(index)
    wait_for(lambda: all(site.status(i).get("phase") == "HA_OFF" for i in range(3)), 30,
             "every host up with HA off")
    enabled = site.hactl("pool-ha-enable", f"ha-config:timeout={T:g}")
    assert enabled.returncode == 0, enabled.stderr
    wait_for(lambda: site.settled([0, 1, 2]), 15 * T, "HA on: [0, 1, 2], one master")
    wait_for(lambda: set(runs(tmp_path)) >= PROTECTED, 10 * T, "the protected VMs running")

    # Adding a host
    site.add_machine(3)
    added = site.hacluster(None, "pool", "add-host", "--pool", "pool", "--address",
                           site.ip(3), "--name", "host3")
    assert added.returncode == 0, added.stderr
    machine = site.install(3, tmp_path / "pool" / "hosts" / "host3")
    checked = site.hacluster(3, "node", "--check", "--config", str(machine / "node.toml"))
    assert checked.returncode == 0 and "waiting to join" in checked.stdout, checked.stdout
    site.start(3)
    wait_for(lambda: site.status(3).get("phase") == "WAITING TO JOIN", 30, "host3 waiting")
    master = site.master([0, 1, 2])
    joined = site.hactl("-s", site.status(3)["management"], "pool-join",
                        f"master-address={site.ip(master)}")
    assert joined.returncode == 0, joined.stderr
    wait_for(lambda: site.settled([0, 1, 2, 3]), 15 * T, "4 hosts in every liveset")

    # Removing a host (not the master)
    gone = next(i for i in (1, 2) if i != master)
    uuid = load(site.machines[gone] / "node.toml").my_uuid
    ejected = site.hactl("pool-eject", f"host-uuid={uuid}")
    assert ejected.returncode == 0, ejected.stderr
    kept = [i for i in range(4) if i != gone]
    wait_for(lambda: site.settled(kept), 15 * T, f"{kept} after the eject")
    wait_for(lambda: site.exited(gone), 30, "the ejected host's daemon gone")
    again = site.hacluster(gone, "node", "--config", str(site.machines[gone] / "node.toml"))
    assert again.returncode == 78 and "not a member" in again.stderr, again.stderr

    # After a power cut: every host killed, every host started again
    for index in kept:
        site.kill(index)
    cut = max(r.last for rs in runs(tmp_path).values() for r in rs)
    for index in kept:
        site.start(index)
    wait_for(lambda: site.settled(kept), 30 * T, f"the pool re-formed on {kept}, HA on")

    def running_again() -> bool:
        return all(any(r.first > cut for r in runs(tmp_path).get(vm, [])) for vm in PROTECTED)

    wait_for(running_again, 20 * T, "every protected VM running again after the power cut")
    status = site.hactl("--json", "status")
    assert status.returncode == 0 and '"ha_enabled": true' in status.stdout, status.stderr
