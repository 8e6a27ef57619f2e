"""A host's services on every one of its networks.

Rules:

* The agent and the management API listen on the host's first address as
  before (failing to is fatal, as it always was), then on each of its other
  service addresses (:meth:`~hacluster.node.roster.Roster.service_hosts`).
* Failing to listen on another network is a warning in the event log, not a
  reason to stop: the service is still reached on the networks it listens on,
  and callers route around the others.
* A host is called first on the network its heartbeats last came in on
  (:func:`heard_best`): the first network whose last heartbeat from it is
  within :data:`HEARD_WITHIN` heartbeat intervals of the newest. With every
  network up that is the first; with the first cut, the next one that still
  carries its heartbeats. Nothing heard from it: no preference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

HEARD_WITHIN = 1.5  # heartbeat intervals: a network this far behind the newest is not heard


def heard_best(beats: Sequence[float | None], interval: float) -> int | None:
    """The network to call a host on first, from when its last heartbeat arrived on
    each (see the rules)."""
    heard = [beat for beat in beats if beat is not None]
    if not heard:
        return None
    newest = max(heard)
    return next(network for network, beat in enumerate(beats)
                if beat is not None and newest - beat <= HEARD_WITHIN * interval)


async def serve_on_other_networks(hosts: Sequence[str], first: str,
                                  serve: Callable[[str], Awaitable[asyncio.AbstractServer]],
                                  log: Callable[..., Any], what: str
                                  ) -> list[asyncio.AbstractServer]:
    """``serve`` on every one of ``hosts`` but ``first``; the servers that started."""
    servers = []
    for host in hosts:
        if host == first:
            continue
        try:
            servers.append(await serve(host))
        except OSError as error:
            log("warning", text=f"the {what} does not listen on {host} "
                f"({error.strerror or error}): it is reached on the host's other networks")
    return servers
