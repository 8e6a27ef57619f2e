"""The VMs of a lab pool: a default pool file with demo workloads, and their disks.

Rules:

* Unless the user gives a pool file, a lab of n hosts protects these VMs,
  each a guest program writing its disk in the lab's shared VM SR
  (``vm-sr/<uuid>.disk``), every host 4 GiB:

  - on host 0: ``dhcp`` (restart, order 0, start delay 2 s: the next order
    waits 2 s after it started), ``sql`` (restart, order 1), ``batch``
    (best-effort) and ``scratch`` (unprotected);
  - on every other host i: ``web<i>`` (restart, order 1).

  So killing host 0 shows ordered restarts, best-effort after protected and
  an unprotected VM staying down.
* A user's pool file must list exactly the lab's hosts; it is checked before
  anything starts.
* What ran where is read back from the guests' own disks
  (:mod:`hacluster.vm.records`), never from the daemons' word.
"""

from __future__ import annotations

from pathlib import Path

from hacluster.core.pool import SR, VM, Host, Network, Pool, PoolError, Power, Priority
from hacluster.model import poolfile
from hacluster.model.poolfile import PoolFile
from hacluster.vm.records import Instance, instances, read_records

HOST_MEMORY = 4096
VM_SR = "vm-sr"
START_DELAY = 2.0


def host_uuid(index: int) -> str:
    return f"host-{index:04}"


def default_pool(hosts: int) -> PoolFile:
    uuids = [host_uuid(i) for i in range(hosts)]
    everyone = frozenset(uuids)
    shared = SR("vm-sr", "shared VM SR", shared=True, plugged=everyone)
    net = Network("net-0", "lab network", everyone)

    def vm(name: str, memory: int, priority: Priority, on: int, order: int = 0,
           delay: float = 0.0) -> VM:
        return VM(f"vm-{name}", name, memory, priority, order, delay, Power.RUNNING,
                  uuids[on], disks=(shared.uuid,), networks=(net.uuid,))

    vms = [vm("dhcp", 256, Priority.RESTART, 0, delay=START_DELAY),
           vm("sql", 512, Priority.RESTART, 0, order=1),
           vm("batch", 256, Priority.BEST_EFFORT, 0),
           vm("scratch", 256, Priority.NONE, 0)]
    vms += [vm(f"web{i}", 256, Priority.RESTART, i, order=1) for i in range(1, hosts)]
    pool = Pool(tuple(Host(u, f"host{i}", HOST_MEMORY, 256) for i, u in enumerate(uuids)),
                tuple(vms), (shared,), (net,), host_failures_to_tolerate=min(1, hosts - 1))
    return PoolFile(pool)


def write_pool(root: Path, hosts: int, user_pool: Path | None) -> PoolFile:
    """The lab's ``pool.toml`` (the user's, checked, or the default) and its VM SR.

    Raises :class:`PoolError` naming what is wrong with the user's file."""
    if user_pool is not None:
        pool_file = poolfile.load(user_pool)
        if len(pool_file.pool.hosts) != hosts:
            raise PoolError(f"{user_pool} lists {len(pool_file.pool.hosts)} hosts; "
                           f"the lab has {hosts}")
    else:
        pool_file = default_pool(hosts)
    (root / "pool.toml").write_text(poolfile.dump(pool_file))
    (root / VM_SR).mkdir(exist_ok=True)
    return pool_file


def runs(root: Path) -> dict[str, list[Instance]]:
    """Every VM's runs, from the disks in the lab's VM SR, by VM uuid."""
    found: dict[str, list[Instance]] = {}
    for disk in sorted((root / VM_SR).glob("*.disk")):
        found[disk.stem] = instances(read_records(disk))
    return found
