"""The heartbeat sockets: one UDP socket per heartbeat network, read in batches.

Rules:

* Two paces, chosen by the owner's ``interval()`` (seconds; re-read after
  every batch and whenever the owner calls :meth:`HeartbeatSockets.pace`):

  - **Polled** (interval > 0: a settled pool). Nobody watches the sockets:
    :meth:`HeartbeatSockets.flush` drains them all (every datagram waiting,
    up to :data:`MAX_PER_DRAIN` each), and a timer does an interval after
    the last drain. An owner that flushes before each of its own inputs,
    more often than the interval, therefore never wakes for heartbeats at
    all, and nothing registers or unregisters a reader (each of which costs
    a loop several system calls): on a machine running many daemons, the
    cost of a wakeup, not of a datagram, is what adds up.
  - **At once** (interval 0: anything else). The sockets are watched, and a
    socket that becomes readable drains every socket at once.

* A polled batch is stamped with the moment of the drain before it: every
  datagram in it arrived after that, so a peer looks at most one interval
  staler than it is, never fresher, and the evidence the core reckons with
  (domains, sightings, leases) errs on the safe side only. A drain cut short
  by a flood does not move that moment on. A batch read at once is stamped
  when the loop saw it readable.
* The owner calls :meth:`HeartbeatSockets.flush` before it stamps any other
  input, so a batch never comes after a later input.
* What a drain leaves behind (a flood) waits for the next batch; the loop is
  never held longer than one drain.
* Each socket asks for a receive buffer of :data:`RECEIVE_BUFFER` (forced
  where the process may, else as much as the system allows): a polled socket
  holds an interval's datagrams from every peer, over 200 KiB (Linux's
  default) at 256 hosts.
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

#: bytes of receive buffer each socket asks for
RECEIVE_BUFFER = 4 << 20
#: Linux's SO_RCVBUFFORCE (Python's socket module does not name it)
SO_RCVBUFFORCE = 33

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
        self.interval = interval  # the polling interval now, in seconds (0: at once)
        self.sockets: list[socket.socket] = []
        self._poll: asyncio.TimerHandle | None = None  # polled: the next drain
        self._since = 0.0  # polled: every datagram waiting arrived after this
        self._watched = False  # at once: the sockets' readers are registered

    def open(self) -> None:
        """Bind every network's socket and start reading them (OSError: a port in use)."""
        try:
            for address in self.addresses:
                family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                self.sockets.append(sock)
                sock.setblocking(False)
                _ask_for_buffer(sock)
                sock.bind((address.host, address.port))
        except OSError:
            self.close()
            raise
        self._since = self.loop.time()
        self.pace()

    def send(self, packet: bytes, network: int, host: str, port: int) -> None:
        with contextlib.suppress(OSError):
            self.sockets[network].sendto(packet, (host, port))

    def flush(self) -> None:
        """Hand over what is waiting now, if polled: called before any other input
        is stamped, so that no datagram is stamped after a later input. The
        next poll is then an interval from now: an owner whose own inputs come
        more often than that wakes for nothing else."""
        if self._poll is not None:
            self._poll.cancel()
            self._polled()

    def pace(self) -> None:
        """Poll or read at once, as ``interval()`` now says (the owner calls this
        when what it depends on changed; not from inside :attr:`on_batch`)."""
        if not self.sockets:
            return
        interval = self.interval()
        if interval > 0 and self._poll is None:
            if self._watched:  # read at once until now: the last such batch
                self._unwatch()
                self._drain(self.loop.time())
            self._poll = self.loop.call_later(interval, self._polled)
        elif interval <= 0 and (self._poll is not None or not self._watched):
            if self._poll is not None:
                self._poll.cancel()
                self._poll = None
                self._drain(self._since)
            self._watch()

    def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self._unwatch()
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    def _polled(self) -> None:
        self._poll = None
        self._drain(self._since)
        self.pace()

    def _readable(self) -> None:
        self._drain(self.loop.time())
        self.pace()

    def _watch(self) -> None:
        for sock in self.sockets:
            self.loop.add_reader(sock.fileno(), self._readable)
        self._watched = True

    def _unwatch(self) -> None:
        if self._watched:
            for sock in self.sockets:
                with contextlib.suppress(ValueError, RuntimeError):
                    self.loop.remove_reader(sock.fileno())
        self._watched = False

    def _drain(self, stamp: float) -> None:
        """Read what waits on every socket; hand it over stamped ``stamp``."""
        began = self.loop.time()
        batch: list[Datagram] = []
        flooded = False
        for network, sock in enumerate(self.sockets):
            for _ in range(MAX_PER_DRAIN):
                try:
                    data, sender = sock.recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue  # an ICMP error queued on the socket: the next one
                batch.append((network, data, sender[0]))
            else:
                flooded = True
        # what waits from now on arrived after this drain began; after a flood,
        # what it left behind is as old as this batch
        self._since = stamp if flooded else began
        if batch:
            self.on_batch(stamp, batch)


def _ask_for_buffer(sock: socket.socket) -> None:
    """:data:`RECEIVE_BUFFER` forced if allowed (CAP_NET_ADMIN), else up to rmem_max."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
