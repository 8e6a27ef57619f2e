"""The heartbeat sockets: one UDP socket per heartbeat network, read in batches.

Rules:

* A socket that becomes readable is not read at once: it stops being
  watched, and a batch interval later every socket is drained (every
  datagram waiting, up to :data:`MAX_PER_DRAIN` each) and watched again. A
  host of an n-host pool therefore wakes for heartbeats at most once per
  batch, not (n - 1) times a beat: on a machine running many daemons, the
  cost of a wakeup, not of a datagram, is what adds up.
* Every datagram of a batch is stamped with the moment the batch began (the
  first readiness), never later: a peer looks at most one batch interval
  staler than it is, never fresher, so the evidence the core reckons with
  (domains, sightings, leases) errs on the safe side only. The owner calls
  :meth:`HeartbeatSockets.flush` before it stamps any other input, so a
  batch never comes after a later input.
* What a drain leaves behind (a flood) waits for the next batch; the loop is
  never held longer than one drain.
* Sending never blocks and never raises: a datagram the kernel will not take
  (a full buffer, an unreachable address) is dropped, as the network might.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence

from hacluster.model.address import Address

#: datagrams read from one socket per drain at most
MAX_PER_DRAIN = 4096
#: bytes of the largest datagram read (a sealed report is far smaller)
MAX_DATAGRAM = 65535

#: ``(network, datagram, sender's host)`` of one batch
Datagram = tuple[int, bytes, str]


class HeartbeatSockets:
    """Bound UDP sockets, one per heartbeat network, drained in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop, addresses: Sequence[Address],
                 on_batch: Callable[[float, list[Datagram]], None],
                 interval: Callable[[], float]) -> None:
        self.loop = loop
        self.addresses = addresses
        self.on_batch = on_batch  # (stamp, datagrams)
        self.interval = interval  # the batch interval now, in seconds
        self.sockets: list[socket.socket] = []
        self._began: float | None = None  # when the batch under way began
        self._drain: asyncio.TimerHandle | None = None

    def open(self) -> None:
        """Bind every network's socket and start watching them (OSError: a port in use)."""
        try:
            for address in self.addresses:
                family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                self.sockets.append(sock)
                sock.setblocking(False)
                sock.bind((address.host, address.port))
        except OSError:
            self.close()
            raise
        for network in range(len(self.sockets)):
            self._watch(network)

    def send(self, packet: bytes, network: int, host: str, port: int) -> None:
        with contextlib.suppress(OSError):
            self.sockets[network].sendto(packet, (host, port))

    def flush(self) -> None:
        """Hand over the batch under way now, if any: called before any other
        input is stamped, so that no datagram is stamped after a later input."""
        if self._drain is not None:
            self._drain.cancel()
            self._drain_all()

    def close(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
        for sock in self.sockets:
            with contextlib.suppress(ValueError, RuntimeError):
                self.loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []

    def _watch(self, network: int) -> None:
        self.loop.add_reader(self.sockets[network].fileno(), self._readable, network)

    def _readable(self, network: int) -> None:
        self.loop.remove_reader(self.sockets[network].fileno())
        if self._began is None:
            self._began = self.loop.time()
            self._drain = self.loop.call_later(self.interval(), self._drain_all)

    def _drain_all(self) -> None:
        began, self._began, self._drain = self._began, None, None
        assert began is not None
        batch: list[Datagram] = []
        for network, sock in enumerate(self.sockets):
            for _ in range(MAX_PER_DRAIN):
                try:
                    data, sender = sock.recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue  # an ICMP error queued on the socket: the next one
                batch.append((network, data, sender[0]))
        for network in range(len(self.sockets)):
            self._watch(network)
        if batch:
            self.on_batch(began, batch)
