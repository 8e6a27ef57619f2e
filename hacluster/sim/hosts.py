"""A simulated host: its clock, daemon state, watchdogs, I/O queue and VMs.

Rules:

* A host's daemon is up while it has a core; a crash, a fence or a clean
  shutdown drops the core, and a reboot gives it a new one with a new boot.
  Timers and I/O of an older boot are void.
* A paused daemon receives nothing until it resumes (inputs queue, as in a
  socket buffer); its VMs, its in-flight I/O and its watchdogs keep running.
* Requests to its agent that arrive while its daemon is paused wait in its
  socket and are served when it resumes, after the core's queued inputs.
* Its agent numbers the VM exits of each boot from 1 and answers a survey
  with what it runs and the exits after the asker's cursor, unless its
  daemon is paused or down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hacluster.core.duties import ExitRecord, HostList
from hacluster.core.events import Input, ReadSlots, Watchdog, WriteSlot
from hacluster.core.node import HostCore
from hacluster.sim.clock import HostClock

MakeInput = Callable[[float], Input]


@dataclass(frozen=True)
class VMEvent:
    """One step of a VM's life, for timelines: ``what`` is starting, running,
    failed (to start), unsure (the start's answer was lost), stopped (died on
    its host) or halted (forced, in the pool)."""

    time: float
    vm: str
    host: int
    what: str
    by: int | None = None  # the master that asked, for starts


@dataclass
class SimHost:
    index: int
    clock: HostClock
    core: HostCore | None = None
    boot: int = 0
    state: str = "up"  # up, crashed, fenced, excluded, vacant (not a member)
    members_version: int = 0  # the newest member table this boot has read
    paused_until: float = 0.0
    queue: list[MakeInput] = field(default_factory=list)
    wake_at: float | None = None  # true time of the pending tick
    watchdog: dict[Watchdog, float] = field(default_factory=dict)
    io_queue: list[WriteSlot | ReadSlots] = field(default_factory=list)
    io_busy: bool = False
    vms: set[str] = field(default_factory=set)
    exits: list[ExitRecord] = field(default_factory=list)  # this boot's, numbered from 1
    requests: list[Callable[[], None]] = field(default_factory=list)  # waiting in its socket

    @property
    def alive(self) -> bool:
        return self.core is not None

    def new_boot(self) -> None:
        """Forget what the previous boot had in flight."""
        self.boot += 1
        self.wake_at = None
        self.state = "up"
        self.io_queue.clear()
        self.io_busy = False
        self.paused_until = 0.0
        self.queue.clear()
        self.exits.clear()
        self.requests.clear()

    def record_exit(self, vm: str, kind: str) -> None:
        self.exits.append(ExitRecord(len(self.exits) + 1, vm, kind))

    def answer_survey(self, since: int, t: float) -> HostList | None:
        """What the host's agent answers a survey (``None``: it does not answer)."""
        if self.core is None or self.paused_until > t:
            return None
        return HostList(frozenset(self.vms), tuple(e for e in self.exits if e.seq > since),
                        len(self.exits))
