"""The node's HTTP face: health, status, metrics and the live status page.

Rules:

* Served by aiohttp on the daemon's main loop, never on the liveness loop;
  what it shows of the liveness loop comes from the node's
  :class:`~hacluster.node.status.SharedStatus` (at most one snapshot per
  :data:`~hacluster.node.status.STATUS_TTL`, however many callers).
* It listens where ``node.toml`` says (:class:`~hacluster.node.config.HttpFace`):
  plain HTTP on a loopback address only, where the host's own users are the
  callers (as for the status socket). On any other address it speaks TLS
  with the host's management certificate, and every request proves a
  credential of the pool before any handler runs (:class:`Guard`): a pool
  client certificate, or ``Authorization: Bearer SECRET`` (a role secret or
  the pool secret), not on the pool's deny list. Every route only reads, so
  the read-only role suffices; anything else gets 401 and no work.
* Connections are admitted as at every host listener
  (:mod:`hacluster.wire.listener`), with :data:`LIMITS`: at most 64 at once
  and 16 per peer address, closed before any byte is read otherwise; a TLS
  handshake must end within the pre-authentication deadline, and a
  connection lasts at most 30 s (a client trickling a request holds a slot
  no longer), an idle kept-alive one :data:`KEEPALIVE`.
* ``/health`` is 200 when HA is armed here and the node is NORMAL, else 503
  with the reason (:func:`health`): load balancers and container health
  checks read the status code. ``/status`` is the status JSON,
  ``/metrics`` the Prometheus text (:mod:`hacluster.node.metrics`), ``/pool``
  the pool as the master sees it (the management API's ``status`` verb,
  relayed to the master if need be, reused for :data:`POOL_TTL`), and ``/``
  the status page (static files, no build step, nothing fetched from
  outside) whose script polls ``/status`` and ``/pool``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web

from hacluster.mgmt.roles import Credential, CredentialError, secret_credential
from hacluster.mgmt.tls import peer_credential
from hacluster.node.config import HttpFace
from hacluster.node.metrics import CONTENT_TYPE, render
from hacluster.node.status import SharedStatus
from hacluster.wire.listener import (
    ConnectionGate,
    Listener,
    ListenerLimits,
    start_protocol_listener,
)

__all__ = ["PAGE_FILES", "POOL_TTL", "Guard", "WebFace", "health"]

POOL_TTL = 1.0  # seconds the master's answer for /pool is reused for
#: monitoring and a few browsers, not the API's callers: fewer connections, each short-lived
LIMITS = ListenerLimits(connections=64, per_peer=16, lifetime=30.0)
KEEPALIVE = 5.0  # s an idle kept-alive connection stays open
#: the status page's files (hacluster/node/webpage) and their content types
PAGE_FILES = {"index.html": "text/html", "page.css": "text/css", "page.js": "text/javascript"}
BEARER = "Bearer "
NO_STORE = {"Cache-Control": "no-store"}


def health(status: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether this node is healthy for HA (armed and NORMAL), and if not why."""
    phase = status.get("phase")
    if phase == "NORMAL" and status.get("armed"):
        return True, "armed and NORMAL"
    if phase == "HA_OFF":
        return False, "HA is off on this host"
    if phase == "UNKNOWN":
        return False, "the liveness loop did not answer in time"
    if phase == "JOINING":
        waits = "; ".join(status.get("waiting", ())) or "waiting to be admitted"
        return False, f"joining the pool: {waits}"
    if phase == "FENCED":
        return False, "this host fenced itself"
    if phase == "EXCLUDED":
        return False, "this host left the pool (excluded)"
    return False, f"a fault handler is running ({phase})"


class Guard:
    """Who may read the pages off loopback: a credential of the pool (read-only
    is enough) that the deny list does not hold."""

    def __init__(self, pool_secret: bytes, denied: Callable[[], frozenset[str]]) -> None:
        self.pool_secret = pool_secret
        self.denied = denied

    def check(self, request: web.Request) -> Credential | str:
        """The caller's credential, or why it has none."""
        header = request.headers.get("Authorization", "")
        credential: Credential | None = None
        try:
            if header.startswith(BEARER):
                credential = secret_credential(header[len(BEARER):].strip().encode(),
                                               self.pool_secret)
            elif request.transport is not None:
                credential = peer_credential(request.transport.get_extra_info("ssl_object"))
        except CredentialError as error:
            return str(error)
        if credential is None:
            return ("a pool credential is needed: a client certificate of the pool, or "
                    "'Authorization: Bearer SECRET' with a role secret")
        if credential.id in self.denied():
            return f"this credential ({credential.id}) is on the pool's deny list"
        return credential  # every role may read (read-only is the lowest)


class WebFace:
    """The HTTP listener and its routes."""

    def __init__(self, face: HttpFace, status: SharedStatus,
                 pool: Callable[[], Awaitable[dict[str, Any]]] | None,
                 guard: Guard | None = None, context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if not face.loopback and (guard is None or context is None):
            raise ValueError(f"the HTTP face on {face.address} (not loopback) needs TLS and "
                             "a guard")
        self.face = face
        self.status = status
        self.pool = None if pool is None else SharedStatus(
            pool, clock or asyncio.get_running_loop().time, POOL_TTL)
        self.guard = guard
        self.context = context
        self.refused = 0  # requests turned away without a credential
        self.page = {name: (resources.files("hacluster.node.webpage") / name).read_bytes()
                     for name in PAGE_FILES}
        self.app = web.Application(middlewares=[self._authenticate])
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/status", self._status)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/pool", self._pool)
        self.app.router.add_get("/", self._file("index.html"))
        for name in PAGE_FILES:
            self.app.router.add_get(f"/{name}", self._file(name))
        self.gate = ConnectionGate(LIMITS)
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None

    async def start(self) -> None:
        """Listen; an ``OSError`` (the port is taken) says so here."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               keepalive_timeout=KEEPALIVE)
        await runner.setup()
        assert runner.server is not None
        try:
            self._listener = await start_protocol_listener(
                self.gate, runner.server, self.face.address, self.face.port, self.context)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        scheme = "http" if self.context is None else "https"
        host = f"[{self.face.address}]" if ":" in self.face.address else self.face.address
        return f"{scheme}://{host}:{self.face.port}/"

    # ------------------------------------------------------------ requests
    @web.middleware
    async def _authenticate(self, request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
        if self.guard is not None:
            credential = self.guard.check(request)
            if isinstance(credential, str):
                self.refused += 1
                return web.json_response({"error": f"authentication failed: {credential}"},
                                         status=401, headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    async def _health(self, request: web.Request) -> web.Response:
        status = await self.status()
        healthy, reason = health(status)
        return web.json_response(
            {"healthy": healthy, "reason": reason, "host": status.get("host"),
             "phase": status.get("phase"), "master": status.get("master")},
            status=200 if healthy else 503, headers=NO_STORE)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.status(), headers=NO_STORE,
                                 dumps=lambda value: json.dumps(value, default=str))

    async def _metrics(self, request: web.Request) -> web.Response:
        body = render(await self.status())
        response = web.Response(body=body, headers=NO_STORE)
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def _pool(self, request: web.Request) -> web.Response:
        if self.pool is None:
            return web.json_response({"error": "this node has no management plane: the pool "
                                      "is shown by its master only with one"}, status=404)
        try:
            answer = await self.pool()
        except Exception as error:  # no master now, or it did not answer: say so
            return web.json_response({"error": str(error)}, status=503, headers=NO_STORE)
        return web.json_response(answer, headers=NO_STORE)

    def _file(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            return web.Response(body=self.page[name], content_type=PAGE_FILES[name],
                                headers=NO_STORE)
        return serve
