"""Growing and shrinking a lab's pool: ``hacluster lab join`` and ``lab eject N``.

Rules:

* A join takes the lowest index the lab has free (its lab address depends on
  it), writes the new host's directory as an operator's ``hacluster pool
  add-host`` does (its pool key, a certificate from the lab's CA, a
  ``node.toml`` naming its own address: a host waiting to join), starts it,
  and runs ``hactl -s NEW pool-join master-address=MASTER`` against it, as an
  operator would: the host is admitted by the master and goes on as a member.
  The lab refuses if the pool gave another index, and adds the host to
  ``hactl.toml``.
* An eject runs ``hactl pool-eject`` for the host's uuid (the pool moves its
  VMs, the host leaves and its index is freed), then waits for its daemon to
  end and forgets it: the index is free for the next join.
* Both change nothing in the lab when hactl refuses, and say hactl's reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Protocol

from hacluster.deploy import poolfiles
from hacluster.lab.local import MGMT_PORT_OFFSET, LabError, LocalLab, members
from hacluster.lab.poll import wait_until
from hacluster.model.address import Address, ConfigError
from hacluster.model.poolfile import load as load_pool
from hacluster.node import config as node_config
from hacluster.node.keyfiles import read_key
from hacluster.node.status import query_status

HACTL_WAIT = 120.0  # seconds a join or an eject may take (an eject moves VMs)


class Rooted(Protocol):
    root: Path  # the lab directory, with its hactl.toml


def hactl(lab: Rooted, *words: str) -> Any:
    """Run hactl with the lab's ``hactl.toml``; its JSON result, or :class:`LabError`."""
    done = subprocess.run(
        [sys.executable, "-m", "hacluster.mgmt.hactl", "--config", str(lab.root / "hactl.toml"),
         "--json", *words], capture_output=True, text=True, check=False, timeout=HACTL_WAIT)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise LabError(f"hactl {words[0]}: {said[-1] if said else f'exit {done.returncode}'}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def join(lab: LocalLab) -> int:
    """Start one more host waiting to join and make it a member with ``hactl
    pool-join``, run against it; returns its index."""
    data = lab.load()
    taken = set(members(data))
    free = [i for i in range(data.get("slots", data["hosts"])) if i not in taken]
    if not free:
        raise LabError(f"the pool has no free slot ({data.get('slots', data['hosts'])} "
                       "indices taken): 'hacluster lab up --slots N' makes room")
    index = free[0]
    master = _master_host(lab)
    settings = data["settings"]
    addresses = [lab.address(index, settings["base_port"], n) for n in range(settings["networks"])]
    memory = load_pool(lab.root / poolfiles.POOL_FILE).pool.hosts[0].memory_total
    host_uuid, name = str(uuid.uuid4()), f"host{index}"
    lab.prepare_host(index)
    poolfiles.write_candidate(lab.host_dir(index), addresses, lab.node_settings(index),
                              read_key(lab.root / poolfiles.KEY_FILE), lab.ca, host_uuid, name,
                              memory)
    data = lab.load()  # prepare_host recorded what it made
    data["members"] = sorted({*members(data), index})
    data["hosts"] = max(data["hosts"], index + 1)
    lab.save(data)
    lab.start(index, armed=False)
    try:
        answer = _pool_join(lab, index, master)
    except LabError:
        _forget(lab, index)
        raise
    given = answer.get("index") if isinstance(answer, dict) else None
    if given != index:
        raise LabError(f"the pool gave host {name} index {given}, the lab expected {index}: "
                       f"eject it (hactl pool-eject host-uuid={host_uuid})")
    try:
        hosts = [tuple(Address.parse(a, "pool-join answer") for a in row)
                 for row in answer["hosts"]]
    except ConfigError as error:
        raise LabError(str(error)) from None
    _write_hactl(lab, hosts)
    return index


def _master_host(lab: LocalLab) -> str:
    """The master's address, from the pool's status (a join needs a master)."""
    status = hactl(lab, "status")
    master = status["pool"]["master"] if isinstance(status, dict) else None
    for host in status.get("hosts", []) if isinstance(status, dict) else []:
        if host.get("uuid") == master and host.get("address"):
            return str(host["address"])
    raise LabError("the pool has no master right now: wait for one, then join again")


def _pool_join(lab: LocalLab, index: int, master: str) -> Any:
    """``hactl -s NEW pool-join master-address=MASTER``, once the new host serves."""
    status = lab.host_dir(index) / "status.sock"

    def waiting() -> bool:
        if not lab.running(index):
            raise LabError(f"host {index} exited before it could join: see "
                           f"{lab.host_dir(index) / 'node.out'}")
        try:
            return query_status(status).get("phase") == "WAITING TO JOIN"
        except OSError:
            return False

    if wait_until(waiting, HACTL_WAIT, poll=0.1) is None:
        raise LabError(f"host {index} did not start waiting to join within {HACTL_WAIT:.0f} s")
    endpoint = query_status(status)["management"]
    return hactl(lab, "-s", endpoint, "pool-join", f"master-address={master}")


def _forget(lab: LocalLab, index: int) -> None:
    """Undo a join that did not happen: the new host's daemon and its place in the lab."""
    lab.kill(index)
    lab.release_host(index)
    data = lab.load()
    data["members"] = [i for i in members(data) if i != index]
    lab.save(data)


def eject(lab: LocalLab, index: int) -> None:
    """Eject member ``index`` from the pool and forget it."""
    data = lab.load()
    if index not in members(data):
        raise LabError(f"host {index} is not a member of this lab's pool "
                       f"(members: {members(data)})")
    config = node_config.load(lab.host_dir(index) / poolfiles.NODE_FILE)
    hactl(lab, "pool-eject", f"host-uuid={config.my_uuid}")
    if wait_until(lambda: not lab.running(index), HACTL_WAIT, poll=0.2) is None:
        lab.kill(index)  # it left the pool (the eject succeeded): its daemon must go too
    lab.release_host(index)
    data = lab.load()
    data["members"] = [i for i in members(data) if i != index]
    lab.save(data)
    rows = [lab.address(i, data["settings"]["base_port"]) for i in data["members"]]
    _write_hactl(lab, [(a,) for a in rows])


def _write_hactl(lab: LocalLab, hosts: list[tuple[Address, ...]]) -> None:
    base_port = lab.load()["settings"]["base_port"]
    poolfiles.write_hactl(lab.root / poolfiles.HACTL_FILE, hosts, base_port + MGMT_PORT_OFFSET,
                          "tls/ca.pem", poolfiles.SECRET_FILE)
