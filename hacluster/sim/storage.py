"""Simulated shared heartbeat SR: one slot per host, per-host I/O faults.

Rules: a host's I/O requests run one after another. ``ok`` I/O completes after
``latency``; ``slow`` after ``slow_latency``; ``error`` fails after
``latency`` (``read-error`` and ``write-error`` fail only reads or writes);
``hang`` never completes and is reported as a timeout at the host's I/O
deadline (the write never lands). A corrupted slot reads as
:class:`SlotCorrupt` until the corruption is lifted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from hacluster.core.events import SlotContent, SlotCorrupt
from hacluster.core.messages import Report


class IOFault(Enum):
    OK = "ok"
    SLOW = "slow"
    ERROR = "error"
    READ_ERROR = "read-error"
    WRITE_ERROR = "write-error"
    HANG = "hang"


@dataclass
class SimStorage:
    hosts: int
    latency: float = 0.002
    slow_latency: float = 0.5
    slots: dict[int, Report] = field(default_factory=dict)
    faults: dict[int, IOFault] = field(default_factory=dict)
    corrupted: set[int] = field(default_factory=set)

    def fault_of(self, host: int) -> IOFault:
        return self.faults.get(host, IOFault.OK)

    def duration(self, host: int, deadline: float, write: bool) -> tuple[float, bool]:
        """How long one read or write of ``host`` takes, and whether it succeeds."""
        fault = self.fault_of(host)
        if fault is (IOFault.READ_ERROR if write else IOFault.WRITE_ERROR):
            fault = IOFault.OK
        if fault is IOFault.OK:
            return self.latency, True
        if fault is IOFault.SLOW:
            return (self.slow_latency, True) if self.slow_latency < deadline else (deadline, False)
        if fault in (IOFault.ERROR, IOFault.READ_ERROR, IOFault.WRITE_ERROR):
            return self.latency, False
        return deadline, False

    def write(self, report: Report) -> None:
        self.slots[report.sender] = report

    def own_slot(self, host: int) -> Report | None:
        """What ``host`` reads of its own slot on starting, if its storage answers."""
        if self.fault_of(host) not in (IOFault.OK, IOFault.SLOW, IOFault.WRITE_ERROR):
            return None
        return None if host in self.corrupted else self.slots.get(host)

    def free(self, index: int) -> None:
        """Zero a slot (an eject frees it for the next host given that index)."""
        self.slots.pop(index, None)

    def read(self) -> Mapping[int, SlotContent]:
        contents: dict[int, SlotContent] = {}
        for index in range(self.hosts):
            if index in self.corrupted:
                contents[index] = SlotCorrupt("checksum mismatch")
            else:
                contents[index] = self.slots.get(index)
        return contents
