"""Growing and shrinking a lab's pool: ``hacluster lab join`` and ``lab eject N``.

Rules:

* A join takes the lowest index the lab has free (its lab address depends on
  it), asks the pool with ``hactl pool-join`` (the lab's ``hactl.toml``), and
  refuses if the pool gave another index. It then writes the new host's
  directory as ``hacluster pool init`` writes any host's (its pool key, a
  certificate from the lab's CA, ``node.toml`` naming it by uuid, with the
  member table's hosts), adds it to ``hactl.toml`` and starts it joining.
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
from typing import Any

from hacluster.deploy import poolfiles
from hacluster.lab.local import LabError, LocalLab, members
from hacluster.lab.poll import wait_until
from hacluster.model.address import Address, ConfigError
from hacluster.model.poolfile import load as load_pool
from hacluster.node import config as node_config
from hacluster.node.keyfiles import read_key

HACTL_WAIT = 120.0  # seconds a join or an eject may take (an eject moves VMs)


def hactl(lab: LocalLab, *words: str) -> Any:
    """Run hactl with the lab's ``hactl.toml``; its JSON result, or :class:`LabError`."""
    done = subprocess.run(
        [sys.executable, "-m", "hacluster.mgmt.hactl", "--config", str(lab.root / "hactl.toml"),
         "--json", *words], capture_output=True, text=True, check=False, timeout=HACTL_WAIT)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise LabError(f"hactl {words[0]}: {said[-1] if said else f'exit {done.returncode}'}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def join(lab: LocalLab) -> int:
    """Start one more host and make it a member; returns its index."""
    data = lab.load()
    taken = set(members(data))
    free = [i for i in range(data.get("slots", data["hosts"])) if i not in taken]
    if not free:
        raise LabError(f"the pool has no free slot ({data.get('slots', data['hosts'])} "
                       "indices taken): 'hacluster lab up --slots N' makes room")
    index = free[0]
    networks = data["settings"]["networks"]
    base_port = data["settings"]["base_port"]
    addresses = [lab.address(index, base_port, n) for n in range(networks)]
    memory = load_pool(lab.root / poolfiles.POOL_FILE).pool.hosts[0].memory_total
    host_uuid, name = str(uuid.uuid4()), f"host{index}"
    answer = hactl(lab, "pool-join", f"address={','.join(map(str, addresses))}",
                   f"name-label={name}", f"memory={memory}", f"uuid={host_uuid}")
    given = answer["index"] if isinstance(answer, dict) else None
    if given != index:
        raise LabError(f"the pool gave host {name} index {given}, the lab expected {index}: "
                       f"eject it (hactl pool-eject host-uuid={host_uuid})")
    try:
        hosts = [tuple(Address.parse(a, "pool-join answer") for a in row)
                 for row in answer["hosts"]]
    except ConfigError as error:
        raise LabError(str(error)) from None
    key = read_key(lab.root / poolfiles.KEY_FILE)
    lab.prepare_host(index)
    poolfiles.write_host(lab.host_dir(index), index, hosts, lab.node_settings(index), key,
                         lab.ca, uuid=host_uuid, name=name)
    data = lab.load()
    data["members"] = sorted({*members(data), index})
    data["hosts"] = max(data["hosts"], index + 1)
    lab.save(data)
    _write_hactl(lab, hosts)
    lab.start(index, armed=False)
    return index


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
    data = lab.load()
    data["members"] = [i for i in members(data) if i != index]
    lab.save(data)
    rows = [lab.address(i, data["settings"]["base_port"]) for i in data["members"]]
    _write_hactl(lab, [(a,) for a in rows])


def _write_hactl(lab: LocalLab, hosts: list[tuple[Address, ...]]) -> None:
    base_port = lab.load()["settings"]["base_port"]
    poolfiles.write_hactl(lab.root / poolfiles.HACTL_FILE, hosts, base_port + 2000,
                          "tls/ca.pem", poolfiles.SECRET_FILE)
