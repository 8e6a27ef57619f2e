"""The restart executor's inputs and outputs: plain data, each input carrying ``now``.

Rules: ``now`` is the master's monotonic clock in seconds; the adapter answers
every :class:`StartVM` with exactly one :class:`StartFinished` (through the
master's duties, :mod:`hacluster.core.duties`). Host and VM names are uuids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hacluster.core.pool import Pool, Power


# ----------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Pass:
    """The periodic master pass, with the committed liveset (host uuids)."""

    now: float
    live: frozenset[str]


@dataclass(frozen=True)
class HostsFailed:
    """The committed liveset removed these hosts: they have fenced."""

    now: float
    hosts: frozenset[str]


@dataclass(frozen=True)
class HostsLeft:
    """These hosts left the liveset cleanly (shut down, excluded): not a failure.
    Their VMs are stopped; protected ones are restarted as any halted one."""

    now: float
    hosts: frozenset[str]


@dataclass(frozen=True)
class StartFinished:
    now: float
    vm: str
    host: str
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class VMExited:
    """A running VM stopped by itself: shut down from inside (``internal_shutdown``) or crashed."""

    now: float
    vm: str
    host: str
    internal_shutdown: bool


@dataclass(frozen=True)
class PauseRestarts:
    """``ha_prevent_restarts_for``: start nothing before ``until`` (master clock)."""

    now: float
    until: float


@dataclass(frozen=True)
class Reconfigure:
    """The pool database changed: its configuration (priorities, orders, delays,
    enabled hosts, tolerance) replaces the view's; the power state and resident
    host of every VM stay as the executor knows them."""

    now: float
    pool: Pool


@dataclass(frozen=True)
class Moved:
    """The operator started, resumed or moved a VM (``vm-start``, ``vm-resume``,
    ``vm-migrate``, ``host-evacuate``): it now runs on ``host``."""

    now: float
    vm: str
    host: str


@dataclass(frozen=True)
class Stopped:
    """The operator stopped a VM on purpose (``vm-shutdown``: ``HALTED``,
    ``vm-suspend``: ``SUSPENDED``): not an exit, nothing to restart."""

    now: float
    vm: str
    power: Power


RestartInput = (Pass | HostsFailed | HostsLeft | StartFinished | VMExited | PauseRestarts
                | Reconfigure | Moved | Stopped)


# ---------------------------------------------------------------- outputs
@dataclass(frozen=True)
class ForceHalt:
    vm: str
    host: str


@dataclass(frozen=True)
class StartVM:
    vm: str
    host: str
    # evidence for people, never compared or printed: why this host, and where it ran
    why: str = field(default="", compare=False, repr=False)
    last_host: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Alert:
    name: str
    obj: str  # uuid of the host, VM or pool concerned
    body: str


RestartAction = ForceHalt | StartVM | Alert
