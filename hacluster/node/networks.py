"""A host's services on every one of its networks.

Rules:

* The agent and the management API listen on the host's first address as
  before (failing to is fatal, as it always was), then on each of its other
  service addresses (:meth:`~hacluster.node.roster.Roster.service_hosts`).
* Failing to listen on another network is a warning in the event log, not a
  reason to stop: the service is still reached on the networks it listens on,
  and callers route around the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


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
