"""The ``netns`` lab backend (root): one network and PID namespace per host.

Rules:

* Host ``i`` lives in network namespace ``ha<lab>-h<i>`` with address
  ``10.77.<lab>.(i+1)`` on a veth pair plugged into the bridge ``ha<lab>br``;
  with ``--networks 2`` also ``10.78.<lab>.(i+1)`` (``eth1``) on a second
  bridge, ``ha<lab>br1``: a second heartbeat and management network.
  its daemon runs as PID 1's child of a fresh PID namespace
  (``unshare --pid --fork --kill-child``), so killing the host kills, by the
  kernel, everything it started.
* The heartbeat SR is a loop device over the lab's SR file. Every host reaches
  it through the lab's one FUSE fault layer (:mod:`hacluster.lab.faultfs`,
  direct I/O), host ``i`` at ``sr.d/<i>/sr`` in the lab directory, so
  ``storage HOST error|hang|slow|ok`` fails one host's storage under the
  descriptors its daemon already holds. One process serves the whole index
  space (joins included): a 64-host lab does not run 64 of them. It runs at
  a higher CPU priority than the hosts (:data:`FAULT_LAYER_NICE`): it stands
  in for a storage array, which does not queue behind the hosts for CPU, and
  the hosts' I/O deadline is a tenth of T (64 busy daemons on two cores
  starved it past that, and every host of the pool lost its lease).
* A host's MAC on each network follows from its IP (:meth:`NetnsLab.mac`):
  a host made again on a freed index gets the MAC the neighbours' ARP
  caches hold for its IP (a new random MAC left them sending to the old one).
* The machine's ARP table (one for all namespaces) is made to fit the lab:
  its limits are raised, never lowered, to the hosts squared and more.
* Network faults are nftables rules in the receiving host's namespace:
  ``partition`` drops every packet between groups, ``drop-from A B`` makes B
  deaf to A (one-way), on every network; ``cut N`` drops everything arriving
  on network N at every host (a black hole: nothing is refused, it is lost);
  ``heal`` flushes them all.
* The bridge forwards between its ports even where a firewall's FORWARD
  policy drops (Docker's does, for every bridge): the lab inserts an accept
  rule for its own bridge and removes it when it goes down.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from hacluster.lab.local import BridgedLab, LabError, members
from hacluster.lab.poll import wait_until

#: the fault layer's nice value: about 28 times a host daemon's share of a busy CPU
FAULT_LAYER_NICE = -15

TABLE = "hacluster"


def sh(*command: str, check: bool = True) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def daemon_pid(root: int, index: int) -> int:
    """The pid of host ``index``'s ``hacluster node`` process: ``root`` or a descendant."""
    todo = [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            if b"hacluster\0node" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        todo += [int(c) for c in sh("pgrep", "-P", str(pid), check=False).split()]
    raise LabError(f"host {index} has no running daemon")


#: the kernel's ARP table limits (one table for every namespace of the machine)
NEIGHBOUR_LIMITS = [f"/proc/sys/net/ipv4/neigh/default/gc_thresh{n}" for n in (1, 2, 3)]


def _room_for_neighbours(hosts: int) -> None:
    """Raise the ARP table's limits to fit the lab: every host's namespace holds
    a neighbour entry for each other host, and the machine's one table counts
    them all (the default hard limit, 1024, is 32 hosts' worth: past it the
    kernel drops ARP entries and hosts stop hearing each other). Never lowered."""
    need = hosts * hosts + 1024  # what may be there besides: other labs, the host's own
    for path, wanted in zip(NEIGHBOUR_LIMITS, (need, 2 * need, 4 * need), strict=True):
        limit = Path(path)
        with contextlib.suppress(OSError, ValueError):
            if int(limit.read_text()) < wanted:
                limit.write_text(str(wanted))


#: what the netns backend runs, and the Debian package of each
TOOLS = {"ip": "iproute2", "nft": "nftables", "losetup": "util-linux", "fusermount3": "fuse3"}


class NetnsLab(BridgedLab):
    backend = "netns"
    networks = 2

    def ns(self, index: int) -> str:
        return f"ha{self.lab_id}-h{index}"

    def bridge(self, network: int = 0) -> str:
        return f"ha{self.lab_id}br{network or ''}"

    @property
    def net(self) -> str:
        """The first three octets of the lab's first /24, e.g. ``10.77.7``."""
        return self.subnet(0)

    def subnet(self, network: int) -> str:
        """The first three octets of network ``network``'s /24: 10.77, 10.78."""
        return f"10.{77 + network}.{self.lab_id}"

    def ip(self, index: int, network: int = 0) -> str:
        return f"{self.subnet(network)}.{index + 1}"

    def mac(self, index: int, network: int) -> str:
        """Host ``index``'s MAC on ``network``: one per IP, so a host made again on a
        freed index (a join after an eject) is found by neighbours' ARP caches."""
        return (f"02:{77 + network:02x}:{self.lab_id:02x}:{index >> 8:02x}:"
                f"{index & 0xff:02x}:01")

    def lab_networks(self) -> int:
        """The heartbeat networks this lab was brought up with."""
        return int(self.load().get("networks", 1))

    def sr_path(self, index: int) -> str:
        return f"../sr.d/{index}/sr"  # its own view through the lab's fault layer

    def prepare(self, hosts: int) -> None:
        if os.geteuid() != 0:
            raise LabError("the netns backend needs root (network namespaces, loop devices)")
        absent = [f"{tool} (Debian package {package})" for tool, package in TOOLS.items()
                  if shutil.which(tool) is None]
        if absent:
            raise LabError("the netns backend needs " + ", ".join(absent)
                           + ": apt-get install " + " ".join(
                               TOOLS[a.split()[0]] for a in absent))
        data = self.load()
        taken = sh("ip", "-o", "link", "show") + sh("ip", "netns", "list")
        free = [n for n in range(1, 201) if f"ha{n}br" not in taken and f"ha{n}-h" not in taken]
        if not free:
            raise LabError("no free lab id: remove old labs with 'hacluster lab down'")
        data["lab_id"] = free[int.from_bytes(os.urandom(2), "big") % len(free)]
        data["loop"] = sh("losetup", "--find", "--show", "--direct-io=on",
                          str(self.root / "heartbeat.sr")).strip()
        self.save(data)
        _room_for_neighbours(hosts)
        self._mount_fault_layer()
        for network in range(self.lab_networks()):
            bridge = self.bridge(network)
            sh("ip", "link", "add", bridge, "type", "bridge")
            sh("ip", "link", "set", bridge, "up")
            self._forward(bridge, "-I")
            # the operator's side: hactl in the root namespace reaches every host
            sh("ip", "addr", "add", f"{self.subnet(network)}.254/24", "dev", bridge)
        for index in range(hosts):
            self._add_namespace(index)

    def prepare_host(self, index: int) -> None:
        """One more host (a join): its namespace on the bridge (the fault layer
        already serves every index of the pool)."""
        self._add_namespace(index)

    def release_host(self, index: int) -> None:
        """The host's namespace goes, and its storage is healed (an eject): a join
        may take its index."""
        sh("ip", "netns", "del", self.ns(index), check=False)
        with contextlib.suppress(OSError):
            self._control(index).write_text("ok\n")

    def _unmount_fault_layer(self, pid: int | None) -> None:
        sh("fusermount3", "-u", "-z", str(self.root / "sr.d"), check=False)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def _add_namespace(self, index: int) -> None:
        ns = self.ns(index)
        sh("ip", "netns", "add", ns)
        for network in range(self.lab_networks()):
            outside, inside = f"{ns}v{network or ''}", f"eth{network}"
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside,
               "address", self.mac(index, network), "netns", ns)
            sh("ip", "link", "set", outside, "master", self.bridge(network), "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(index, network)}/24", "dev", inside)
            sh("ip", "-n", ns, "link", "set", inside, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", TABLE)
        sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", TABLE, "input",
           "{ type filter hook input priority 0 ; policy accept ; }")

    @staticmethod
    def _forward(bridge: str, action: str) -> None:
        """Let the bridge forward between its own ports (``-I``), or stop (``-D``).

        A firewall on the machine may drop bridged traffic: Docker sets the
        FORWARD policy to DROP and makes bridges go through it."""
        if shutil.which("iptables"):
            sh("iptables", action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
               check=False)

    def _control(self, index: int) -> Path:
        return self.root / "sr.d" / str(index) / "control"

    def _mount_fault_layer(self) -> None:
        """The lab's one storage fault layer, serving every index of the pool."""
        mount = self.root / "sr.d"
        mount.mkdir(parents=True, exist_ok=True)
        data = self.load()
        with (self.root / "faultfs.out").open("ab") as out:
            process = subprocess.Popen(
                ["nice", "-n", str(FAULT_LAYER_NICE),
                 sys.executable, "-m", "hacluster.lab.faultfs", "--backing", data["loop"],
                 "--mount", str(mount), "--hosts", str(data["slots"])],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        data["fault_layer"] = process.pid
        self.save(data)
        wait_until(lambda: self._control(0).exists() or process.poll() is not None, 10)
        if not self._control(0).exists():
            raise LabError(f"the storage fault layer did not start (see "
                           f"{self.root / 'faultfs.out'}; is fuse3 installed?)")

    def storage(self, index: int, mode: str) -> None:
        """Put host ``index``'s storage into ``mode``: ok, error, hang or slow."""
        from hacluster.lab.faultfs import MODES

        self._check(index, self.load())
        if mode not in MODES:
            raise LabError(f"storage mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._control(index).write_text(mode + "\n")

    def wrap(self, index: int, command: list[str]) -> list[str]:
        # a shell is PID 1 of the namespace, so the daemon is an ordinary process
        # that its own watchdog may kill; when it dies the shell exits and the
        # kernel kills whatever is left in the namespace
        script = " ".join(shlex.quote(word) for word in command) + " & wait $!"
        return ["ip", "netns", "exec", self.ns(index),
                "unshare", "--pid", "--fork", "--kill-child", "sh", "-c", script]

    def down(self) -> None:
        # release hung requests first, or their processes cannot finish dying
        data = self.load()
        if data.get("fault_layer"):
            for index in members(data):
                with contextlib.suppress(OSError):
                    self._control(index).write_text("ok\n")
        super().down()

    def teardown(self, data: dict[str, Any]) -> None:
        lab_id = data.get("lab_id")
        if lab_id is None:
            return
        for index in range(data["hosts"]):
            sh("ip", "netns", "del", f"ha{lab_id}-h{index}", check=False)
        if "fault_layer" in data:
            self._unmount_fault_layer(data["fault_layer"])
        for network in range(int(data.get("networks", 1))):
            bridge = f"ha{lab_id}br{network or ''}"
            self._forward(bridge, "-D")
            sh("ip", "link", "del", bridge, check=False)
        if data.get("loop"):
            sh("losetup", "-d", data["loop"], check=False)

    # ------------------------------------------------------------ chaos
    def pause(self, index: int, seconds: float) -> None:
        """SIGSTOP the daemon itself (the child of the PID namespace's init)."""
        daemon = self._daemon_pid(index)
        self._signal_pause(daemon, seconds)

    def _daemon_pid(self, index: int) -> int:
        """The root-namespace pid of the host's ``hacluster node`` process."""
        return daemon_pid(self.pid(index), index)

    def _drop(self, receiver: int, sender: int) -> None:
        for network in range(self.lab_networks()):
            sh("ip", "netns", "exec", self.ns(receiver), "nft", "add", "rule", "inet", TABLE,
               "input", "ip", "saddr", self.ip(sender, network), "drop")

    def cut(self, network: int) -> None:
        """Every host stops receiving anything on heartbeat network ``network``."""
        data = self.load()
        if not 0 <= network < self.lab_networks():
            raise LabError(f"this lab has {self.lab_networks()} network(s): cut 0.."
                           f"{self.lab_networks() - 1}, not {network}")
        for index in members(data):
            sh("ip", "netns", "exec", self.ns(index), "nft", "add", "rule", "inet", TABLE,
               "input", "iifname", f"eth{network}", "drop")

    def partition(self, groups: list[list[int]]) -> None:
        hosts = self.load()["hosts"]
        listed = sorted(h for g in groups for h in g)
        if listed != list(range(hosts)):
            raise LabError(f"a partition must list every host 0..{hosts - 1} exactly once")
        for group in groups:
            for other in groups:
                if other is not group:
                    for receiver in group:
                        for sender in other:
                            self._drop(receiver, sender)

    def drop_from(self, sender: int, receiver: int) -> None:
        data = self.load()
        self._check(sender, data)
        self._check(receiver, data)
        self._drop(receiver, sender)

    def heal(self) -> None:
        for index in range(self.load()["hosts"]):
            with contextlib.suppress(LabError):
                sh("ip", "netns", "exec", self.ns(index), "nft", "flush", "chain", "inet",
                   TABLE, "input")

    def network_fault(self, verb: str) -> None:
        raise LabError(f"usage: hacluster lab {verb} ... (see --help)")
