"""A host waiting to join a pool: the management API alone, until ``hactl pool-join``.

Rules:

* Started with a ``node.toml`` that names this host's ``address`` and no
  index (:class:`~hacluster.node.config.Candidate`), the daemon serves the
  management API (TLS with its pool-CA certificate; every call authenticated
  as on a member, before any work) and its status socket, and nothing else:
  no heartbeat, no agent, no VM; the SR is neither read nor written.
* It answers one verb, ``pool-join master-address=HOST[:PORT]`` (operator;
  the port defaults to this host's management port). It asks that host,
  which must be the master, to admit it with ``pool-admit`` (its addresses,
  uuid, name and memory), relayed with the caller's credential so that the
  master checks and audits the operator, not this host. Every other verb is
  refused, saying how to join; so is a second ``pool-join`` while one runs.
* The master's answer must give this host an index whose row holds exactly
  its own addresses; then ``node.toml`` is rewritten atomically as a member's
  (``index``, ``hosts``, ``slots``; every other field as it was) and read back
  with the node's loader. The caller gets the answer, and the daemon goes on
  as a member (:func:`wait_to_join` returns :data:`JOINED`): the SR's member
  table lists it, so it starts like any member, joining if HA is on.
* A refusal by the master, or an unreachable master, changes nothing here.
  If the master admitted this host but its ``node.toml`` cannot be written,
  the answer says so and names the uuid to eject; the host keeps waiting.
* Under systemd it sends ``READY=1`` once serving, ``STATUS=`` saying it
  waits to join, and ``WATCHDOG=1`` as a member does; systemd's variables are
  left for the member daemon it becomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from hacluster.core.pool import PoolError
from hacluster.mgmt import api
from hacluster.mgmt.tls import CertFiles, client_context, server_context
from hacluster.mgmt.verbs import Call
from hacluster.model.address import Address, ConfigError
from hacluster.node.config import Candidate, Management, load
from hacluster.node.journal import Level, say
from hacluster.node.status import serve_status
from hacluster.node.systemd import Notifier
from hacluster.storage.files import write_atomically

JOINED = 0  # wait_to_join's result once this host is a member
GRACE = 0.2  # seconds the last answer is given to leave before the API closes
PUBLIC = 0o644


class Waiting:
    """The management API's host while this one waits to join (:class:`api.Host`)."""

    def __init__(self, candidate: Candidate) -> None:
        self.candidate = candidate
        mgmt = candidate.config.mgmt
        assert mgmt is not None  # a candidate's configuration requires it
        self.mgmt: Management = mgmt
        self.joined = asyncio.Event()
        self.joining = False
        self.given: dict[str, Any] | None = None  # the master's answer, once admitted

    # -- api.Host ----------------------------------------------------------------
    def is_master(self) -> bool:
        """Every call is answered here: this host knows no master and relays nothing."""
        return True

    def master_endpoints(self) -> list[tuple[str, int]]:
        return []

    def answers_without_master(self, verb: str) -> bool:
        return False

    def denied_credentials(self) -> frozenset[str]:
        return frozenset()  # the pool's deny list is the master's: it checks the caller

    async def answer(self, call: Call) -> api.Answer:
        if call.verb != "pool-join":
            raise PoolError(f"this host ({self.candidate.config.my_uuid}) waits to join a pool "
                            f"and answers only pool-join: run 'hactl -s "
                            f"{self.endpoint()} pool-join master-address=MASTER' first")
        if self.joining:
            raise PoolError("a pool-join is under way on this host already")
        self.joining = True
        try:
            async for out in self._join(call):
                yield out
        finally:
            self.joining = False

    # -- the join ------------------------------------------------------------------
    def endpoint(self) -> str:
        return str(Address(self.candidate.config.address.host, self.mgmt.port))

    def _master(self, text: str) -> Address:
        spelled = text if text.rpartition(":")[2].isdigit() and not text.endswith("]") \
            else f"{text}:{self.mgmt.port}"
        try:
            return Address.parse(spelled, "master-address")
        except ConfigError as error:
            raise PoolError(f"{error} (the master's management address, HOST or HOST:PORT)") \
                from None

    async def _join(self, call: Call) -> api.Answer:
        master = self._master(call.params["master-address"])
        candidate = self.candidate
        config = candidate.config
        admit = Call("pool-admit", {
            "address": ",".join(map(str, candidate.addresses)),
            "name-label": config.name or config.my_uuid, "memory": str(candidate.memory),
            "uuid": config.my_uuid}, caller=call.caller)
        yield {"progress": f"asking {master} to admit {config.name or config.my_uuid}"}
        given = await self._ask(master, admit)
        index, hosts, slots = self._check(given)
        text = candidate.joined(index, hosts, slots)
        try:
            write_atomically(candidate.path, text.encode(), PUBLIC)
            load(candidate.path)
        except (OSError, ConfigError) as error:
            raise PoolError(f"the master admitted this host as index {index}, but its "
                            f"node.toml could not be written ({error}): fix that and eject it "
                            f"(hactl pool-eject host-uuid={config.my_uuid}) before trying "
                            "again") from None
        self.given = given
        yield {"ok": True, "result": {**given, "joined": True}}
        self.joined.set()  # reached once the answer above was sent

    async def _ask(self, master: Address, admit: Call) -> dict[str, Any]:
        context = client_context(self.mgmt.ca)
        try:
            async for out in api.exchange([(master.host, master.port)], context,
                                          self.mgmt.secret, admit, relayed=True):
                if "progress" in out:
                    continue
                if not out.get("ok"):
                    error = str(out.get("error", "refused"))
                    if "not the master" in error:
                        error = (f"{master} is not the pool's master: give the master's "
                                 "management address (hactl status names the master)")
                    raise PoolError(f"the pool refused to admit this host: {error}")
                result = out.get("result")
                if not isinstance(result, dict):
                    raise PoolError(f"{master} answered pool-admit without a result")
                return result
        except api.ApiError as error:
            raise PoolError(f"could not reach the master {master}: {error}") from None
        raise PoolError(f"{master} ended the call without an answer")

    def _check(self, given: dict[str, Any]) -> tuple[int, list[list[str]], int]:
        """The index, host list and slot count the master gave, if they name this host."""
        index, hosts, slots = given.get("index"), given.get("hosts"), given.get("slots")
        if not (isinstance(index, int) and isinstance(slots, int) and isinstance(hosts, list)
                and 0 <= index < len(hosts) <= slots
                and all(isinstance(row, list) and all(isinstance(a, str) for a in row)
                        for row in hosts)):
            raise PoolError(f"the master's answer is malformed: {given!r}: eject this host "
                            f"(hactl pool-eject host-uuid={self.candidate.config.my_uuid})")
        mine = [str(a) for a in self.candidate.addresses]
        if hosts[index] != mine:
            raise PoolError(f"the master gave index {index} to {hosts[index]}, not to this "
                            f"host's {mine}: eject it (hactl pool-eject host-uuid="
                            f"{self.candidate.config.my_uuid})")
        return index, hosts, slots

    def status(self) -> dict[str, Any]:
        config = self.candidate.config
        return {"phase": "WAITING TO JOIN", "uuid": config.my_uuid, "name": config.name,
                "address": str(config.address),
                "networks": [str(a) for a in config.addresses],
                "management": self.endpoint(),
                "join": f"hactl -s {self.endpoint()} pool-join master-address=MASTER"}


async def wait_to_join(candidate: Candidate) -> int:
    """Serve until a ``pool-join`` makes this host a member: :data:`JOINED`."""
    config = candidate.config
    waiting = Waiting(candidate)
    mgmt = waiting.mgmt
    server = api.Server(waiting, mgmt.secret,
                        server_context(CertFiles(mgmt.cert, mgmt.key), mgmt.ca),
                        client_context(mgmt.ca))
    # a copy: the member daemon this one becomes reads systemd's variables again
    systemd = Notifier.from_environment(dict(os.environ))
    listener = await server.serve(config.address.host, mgmt.port)

    async def status() -> dict[str, Any]:
        return waiting.status()

    status_server = await serve_status(config.status_socket, status)
    say(Level.NOTICE, f"waiting to join a pool: {waiting.status()['join']}")
    systemd.ready()
    systemd.set_status("waiting to join a pool (hactl pool-join)")
    petting = asyncio.create_task(_pet(systemd))
    try:
        await waiting.joined.wait()
        await asyncio.sleep(GRACE)
    finally:
        petting.cancel()
        listener.close()
        status_server.close()
        with contextlib.suppress(OSError):
            config.status_socket.unlink()
    given = waiting.given or {}
    say(Level.NOTICE, f"joined the pool as index {given.get('index')}")
    return JOINED


async def _pet(systemd: Notifier) -> None:
    """systemd's watchdog (``WatchdogSec=``) is petted while this host waits, too."""
    interval = systemd.pet_interval
    while interval is not None:
        systemd.pet()
        await asyncio.sleep(interval)
