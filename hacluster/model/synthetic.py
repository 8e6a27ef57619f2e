"""Synthetic pools: a seeded, realistic-looking pool for planning and benchmarks.

Rules:

* ``random_pool(hosts, vms, seed)`` is a pure function of its arguments (one
  ``random.Random(seed)``): the same call always gives the same pool.
* VM sizes follow a mix seen in virtualised estates (many small VMs, some 3,
  6, 12 and 24 GiB ones, so sizes do not all divide each other); priorities
  are about 40 % restart, 30 % best-effort, 30 % unprotected; orders 0-3.
* Host memory (a few hardware sizes) is scaled so the VMs fill ``fill`` (by
  default 60 %) of the pool; VMs are placed on random hosts with room, and the few that find
  none stay halted. About 2 % of VMs are not agile (a local disk or CD) and
  1 % carry a GPU (never protected, as the rules require).
"""

from __future__ import annotations

import random

from hacluster.core.pool import SR, VM, Host, Network, Pool, Power, Priority

GIB = 1024
SIZES_GIB = (0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
SIZE_WEIGHTS = (8, 18, 22, 6, 18, 5, 11, 3, 6, 1, 2)
HOST_SHAPES = (1.0, 1.5, 2.0, 3.0)  # relative memory of the hardware models
FILL = 0.6


def random_pool(hosts: int, vms: int, seed: int, tolerate: int = 1, fill: float = FILL) -> Pool:
    if hosts < 1 or vms < 0:
        raise ValueError(f"a pool needs at least one host and no negative VM count, "
                         f"got {hosts}:{vms}")
    rng = random.Random(seed)
    sizes = [int(rng.choices(SIZES_GIB, SIZE_WEIGHTS)[0] * GIB) for _ in range(vms)]
    shapes = [rng.choice(HOST_SHAPES) for _ in range(hosts)]
    unit = max(sum(sizes) / fill / sum(shapes), 64 * GIB)
    overhead = 4 * GIB
    host_list = tuple(
        Host(f"host-{i:04}", f"host{i}", int(shape * unit) // GIB * GIB + overhead, overhead)
        for i, shape in enumerate(shapes))
    everyone = frozenset(h.uuid for h in host_list)
    shared = SR("sr-shared", "shared-nfs", shared=True, plugged=everyone)
    local = [SR(f"sr-local-{i:04}", f"local{i}", shared=False, plugged=frozenset({h.uuid}))
             for i, h in enumerate(host_list)]
    network = Network("net-0", "management", everyone)
    room = {h.uuid: h.memory_total - h.memory_overhead for h in host_list}
    made = []
    for k, size in enumerate(sizes):
        roll = rng.random()
        gpu = roll < 0.01
        pinned = 0.01 <= roll < 0.03
        priority = rng.choices(list(Priority), (40, 30, 30))[0]
        if gpu and priority is Priority.RESTART:
            priority = Priority.BEST_EFFORT
        candidates = [u for u in rng.sample(sorted(room), min(8, hosts)) if room[u] >= size]
        resident = candidates[0] if candidates else None
        if resident is not None:
            room[resident] -= size
        disk = local[host_list.index(next(h for h in host_list if h.uuid == resident))].uuid \
            if pinned and resident is not None else shared.uuid
        made.append(VM(
            f"vm-{k:05}", f"vm{k}", size, priority, order=rng.choice((0, 0, 1, 2, 3)),
            start_delay=float(rng.choice((0, 0, 5, 10))),
            power=Power.RUNNING if resident else Power.HALTED, resident=resident,
            disks=(disk,), networks=(network.uuid,), devices=("gpu0",) if gpu else ()))
    return Pool(host_list, tuple(made), (shared, *local), (network,),
                host_failures_to_tolerate=min(tolerate, hosts - 1))


def parse_shape(text: str) -> tuple[int, int]:
    """``"64:8000"`` -> (64, 8000), with a clear error otherwise."""
    hosts, sep, vms = text.partition(":")
    if not sep or not hosts.isdigit() or not vms.isdigit() or int(hosts) < 1:
        raise ValueError(f"expected HOSTS:VMS such as 64:8000, got {text!r}")
    return int(hosts), int(vms)
