"""What a simulation runs: how many hosts, which pool, which timing, which seed.

Rules: unless given, the timing is derived from ``timeout`` (T), the pool is
:func:`default_pool` and restarts are retried every T/2; a pool must have one
host per simulated host (host ``i`` is ``pool.hosts[i]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hacluster.core.node import Mode
from hacluster.core.pool import VM, Host, Pool, Power, Priority
from hacluster.core.restarts import RestartConfig
from hacluster.core.timing import Timing
from hacluster.sim.network import NetworkConditions

VM_MEMORY = 1024  # MiB, each VM of the default pool


def default_pool(hosts: int, vms_per_host: int) -> Pool:
    """Hosts that can each run every VM; ``vms_per_host`` protected order-0 VMs on each."""
    memory = max(1, hosts * vms_per_host) * VM_MEMORY
    members = tuple(Host(f"host-{i}", f"h{i}", memory) for i in range(hosts))
    vms = tuple(VM(f"vm-{k}", f"vm-{k}", VM_MEMORY, Priority.RESTART, power=Power.RUNNING,
                   resident=members[k // vms_per_host].uuid)
                for k in range(hosts * vms_per_host))
    return Pool(members, vms, host_failures_to_tolerate=max(0, hosts - 1))


@dataclass
class SimConfig:
    hosts: int
    seed: int
    timeout: float = 5.0
    mode: Mode = Mode.STATEFILE
    vms_per_host: int = 2
    skew: float = 0.005
    network: NetworkConditions = field(default_factory=NetworkConditions)
    reboot_after: float | None = None
    timing: Timing | None = None
    cold_start: bool = False  # hosts start joining, with no liveset (clustered mode)
    pool: Pool | None = None  # default: default_pool(hosts, vms_per_host)
    boot_time: float = 0.3  # seconds a VM start takes
    restart: RestartConfig | None = None  # default: retries every T/2
    members: frozenset[int] | None = None  # the pool's hosts at start; None: every host

    def resolved_timing(self) -> Timing:
        return self.timing if self.timing is not None else Timing.derive(self.timeout)

    def resolved_pool(self) -> Pool:
        pool = self.pool if self.pool is not None else default_pool(self.hosts, self.vms_per_host)
        if len(pool.hosts) != self.hosts:
            raise ValueError(f"the pool has {len(pool.hosts)} hosts, the simulation {self.hosts}")
        return pool

    def resolved_restart(self) -> RestartConfig:
        if self.restart is not None:
            return self.restart
        return RestartConfig(retry_interval=self.resolved_timing().T / 2)
