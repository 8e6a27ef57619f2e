"""The management API: verbs over TLS, authenticated, answered by the master.

Rules:

* Every host serves it on its management port, over TLS with its pool-CA
  certificate. A connection carries one call, in frames of a 4-byte length
  and a msgpack map: the client sends its credentials ``{secret, caller}``
  (at most :data:`PREAUTH_FRAME` bytes), the server answers
  ``{"authenticated": true}`` (or the final refusal), the client sends its
  request ``{verb, params, flags, relayed}`` (at most
  :data:`~hacluster.wire.rpc.MAX_REQUEST` bytes). The answer is zero or more
  ``{"progress": text}`` frames, then ``{"ok": true, "result": ...}`` or
  ``{"ok": false, "error": text}``, each at most
  :data:`~hacluster.wire.rpc.MAX_FRAME` bytes.
* Nothing but a few KiB is read from a peer that has not proven itself. The
  listener's :class:`~hacluster.wire.listener.ConnectionGate` caps connections
  per listener and per peer address (over a cap a connection is closed
  before any TLS work); the TLS handshake must end within ``limits.preauth``
  (else it is counted in the gate's ``no_tls``), the credentials frame within
  ``limits.preauth`` more, the request frame then within ``limits.request``.
  A peer that fails any of this reaches no handler; one that fails after
  TLS is counted in :attr:`Server.refused`.
* No exception from a peer's input escapes the connection handler: an
  answer that cannot be framed is replaced by an error saying so, and a
  failure inside a call's handling is answered as an error and counted in
  :attr:`Server.failed`.
* Every call is authenticated before anything else: the pool secret, a role
  secret (compared in constant time) or a client certificate signed by the
  pool CA (:mod:`hacluster.mgmt.roles`); a credential on the pool's deny list
  is refused. Then the call's role is checked against the verb's. A call that
  fails either gets a clear error and reaches no handler. The handler gets
  the call with its caller's credential (for the audit); a relayed call names
  that caller, so the master checks and records the caller, not the relaying
  host.
* The call's shape is checked with the verb table (:mod:`hacluster.mgmt.verbs`)
  on the server too. Local verbs are answered by the host reached; the others
  by the master: a host that is not master relays the call to the one it
  knows, once (a relayed call is never relayed again), over the master's
  first network, else its next (a connection not made within
  :data:`CONNECT_TIMEOUT` counts as unreachable); with no master known
  (or that master does not take the connection: it just died) it waits up to
  :data:`MASTER_WAIT` for the election to end, then the error says so and
  what to do. The one verb a host answers itself with no master is
  ``pool-ha-disable`` while the heartbeat SR is lost everywhere (survival
  rule 2: there is no master until it is back).
* The client tries the pool's hosts in order until one answers, so any live
  host will do; every failure becomes :class:`ApiError` saying what to do.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import msgpack

from hacluster.core.pool import PoolError
from hacluster.mgmt.roles import Credential, CredentialError, authenticate, refusal
from hacluster.mgmt.tls import peer_credential
from hacluster.mgmt.verbs import VERBS, Call, UsageError, check, lookup
from hacluster.wire.dial import PathMemory, first_open
from hacluster.wire.listener import ConnectionGate, Listener, close_quietly, start_listener
from hacluster.wire.rpc import (
    LENGTH,
    MAX_FRAME,
    MAX_REQUEST,
    FrameError,
    decode_message,
    read_frame,
)

PREAUTH_FRAME = 4096  # a secret and a relayed caller's name fit in a few hundred bytes
RELAY_TIMEOUT = 120.0
CONNECT_TIMEOUT = 3.0  # TCP and TLS to one address; past it, that address is unreachable
NEXT_ENDPOINT_DELAY = 1.0  # the next address is tried this long after the one before
MASTER_WAIT = 10.0  # a call arriving during an election waits this long for a master


class ApiError(RuntimeError):
    """A call that did not succeed, with the reason."""


class Unreachable(ApiError):
    """No connection to that host: another host of the pool may answer."""


Answer = AsyncIterator[dict[str, Any]]


class Host(Protocol):
    """What the API needs from the daemon it runs in."""

    def is_master(self) -> bool: ...
    def master_endpoints(self) -> list[tuple[str, int]]: ...  # one per network, or none
    def answers_without_master(self, verb: str) -> bool: ...  # pool-ha-disable in rule 2
    def answer(self, call: Call) -> Answer: ...
    def denied_credentials(self) -> frozenset[str]: ...  # the pool's deny list, as known here


def frame(message: dict[str, Any], limit: int = MAX_FRAME) -> bytes:
    """``message`` framed; ``ValueError`` if over ``limit`` bytes, ``TypeError`` (or
    ``OverflowError``) if it does not pack."""
    body: bytes = msgpack.packb(message, use_bin_type=True)
    if len(body) > limit:
        raise ValueError(f"a message of {len(body)} bytes exceeds {limit}")
    return LENGTH.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> dict[str, Any]:
    """One frame of at most ``limit`` bytes, decoded; :class:`FrameError` otherwise."""
    return decode_message(await read_frame(reader, minimum=1, maximum=limit), limit)


@dataclass
class Server:
    host: Host
    secret: bytes
    context: ssl.SSLContext
    client_context: ssl.SSLContext  # for relaying to the master
    refused: int = 0  # peers that did not prove themselves, or sent a bad request
    failed: int = 0  # calls whose handling raised (answered as an error)
    gate: ConnectionGate = field(default_factory=ConnectionGate)
    # answered calls by (verb, result): a verb not in the verb table counts as "unknown"
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    paths: PathMemory = field(default_factory=PathMemory)  # the master's network that answered

    def counts(self) -> dict[str, int | str]:
        """For status displays."""
        return {**self.gate.counts(), "refused": self.refused, "failed": self.failed}

    def call_counts(self) -> list[dict[str, Any]]:
        """Answered calls: verb, result (ok, error or failed) and how many."""
        return [{"verb": verb, "result": result, "count": count}
                for (verb, result), count in sorted(self.calls.items())]

    async def ask(self, verb: str, credential: Credential) -> Any:
        """The result of ``verb`` (no parameters) for ``credential``, answered here or
        by the master as a call over the API would be (this host's own pages use
        it); :class:`ApiError` saying why not."""
        result: Any = None
        async for answer in self._answers({"verb": verb}, credential):
            if "progress" in answer:
                continue
            if not answer.get("ok"):
                raise ApiError(str(answer.get("error", "failed without a reason")))
            result = answer.get("result")
        return result

    async def serve(self, address: str, port: int) -> Listener:
        return await start_listener(self.gate, self._connection, address, port,
                                    context=self.context, buffer=PREAUTH_FRAME)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """One call: TLS and credentials, then the request, each within its deadline."""
        try:
            credential = await self._credential(reader, writer)
            if credential is None:
                return
            try:
                async with asyncio.timeout(self.gate.limits.request):
                    request = await read_message(reader, MAX_REQUEST)
            except (FrameError, TimeoutError) as error:
                self.refused += 1
                await self._send(writer, {"ok": False, "error": f"bad request: {error}"})
                return
            verb, result = _verb_label(request.get("verb")), "error"
            try:
                async for answer in self._answers(request, credential):
                    if answer.get("ok"):
                        result = "ok"
                    if not await self._send(writer, answer):
                        return
                self.calls[verb, result] += 1
            except (ConnectionError, ssl.SSLError):
                raise
            except Exception as error:  # a failure inside the call: the client hears of it
                self.failed += 1
                self.calls[verb, "failed"] += 1
                await self._send(writer, {"ok": False, "error": f"the call failed on this host "
                                          f"({type(error).__name__}: {error}); read the state "
                                          "back before retrying"})
        except (ConnectionError, ssl.SSLError):
            pass  # the client went away

    async def _credential(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> Credential | None:
        """The peer's credential (its TLS handshake done), proven within ``limits.preauth``
        by a frame of at most :data:`PREAUTH_FRAME` bytes; None (answered if it can be,
        and counted) if not."""
        deadline = self.gate.limits.preauth
        try:
            async with asyncio.timeout(deadline):
                credentials = await read_message(reader, PREAUTH_FRAME)
            credential = self._authentic(credentials, writer)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            self.refused += 1  # no credentials in time: nothing to answer
            writer.transport.abort()  # the descriptor is freed now, not after a goodbye
            return None
        except FrameError as error:
            self.refused += 1
            await self._send(writer, {"ok": False, "error": f"bad credentials: {error}"})
            return None
        except CredentialError as error:
            self.refused += 1
            await self._send(writer, {"ok": False, "error": f"authentication failed: {error}"})
            return None
        await self._send(writer, {"authenticated": True})
        return credential

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> bool:
        """Write one frame; one that cannot be framed is replaced by a final error saying
        so (and False: the call's answer ends there)."""
        try:
            data, whole = frame(message), True
        except (TypeError, ValueError, OverflowError) as error:
            data, whole = frame({"ok": False, "error": f"the answer cannot be sent: {error}"}), \
                False
        writer.write(data)
        await writer.drain()
        return whole

    async def _answers(self, request: dict[str, Any], credential: Credential) -> Answer:
        try:
            params = request.get("params", {})
            flags = request.get("flags", [])
            if not isinstance(params, dict) or not isinstance(flags, list):
                raise UsageError("params must be a map and flags a list")
            call = check(str(request.get("verb", "")), params, flags)
        except UsageError as error:
            yield {"ok": False, "error": str(error)}
            return
        too_low = refusal(credential, call.verb, lookup(call.verb).role)
        if too_low is not None:
            self.refused += 1
            yield {"ok": False, "error": too_low}
            return
        call = replace(call, caller=credential)
        local = lookup(call.verb).local
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MASTER_WAIT
        while True:
            if local or self.host.is_master() or self.host.answers_without_master(call.verb):
                async for answer in self._local(call):
                    yield answer
                return
            if request.get("relayed"):
                yield {"ok": False, "error": "this host is not the master (any more); "
                       "try again"}
                return
            masters = self.host.master_endpoints()  # one per network, its first first
            if masters:
                try:
                    async for answer in exchange(masters, self.client_context, self.secret,
                                                 call, relayed=True, paths=self.paths):
                        yield answer
                    return
                except Unreachable:
                    pass  # the master just died: wait for the next one
                except ApiError as error:
                    yield {"ok": False, "error": f"the master did not answer: {error}"}
                    return
            if loop.time() >= deadline:
                yield {"ok": False, "error": "no master right now: HA may be electing one "
                       "(retry in a few seconds); if the master is gone for good, see the "
                       "emergency procedures (pool-emergency-transition-to-master)"}
                return
            await asyncio.sleep(0.2)

    async def _local(self, call: Call) -> Answer:
        try:
            async for answer in self.host.answer(call):
                yield answer
        except (PoolError, UsageError, ApiError) as error:
            yield {"ok": False, "error": str(error)}
        except OSError as error:  # the redo log or the local backup: storage failed
            yield {"ok": False, "error": f"the master could not make the change durable "
                   f"({error}); it may or may not be in force: read it back before retrying"}

    def _authentic(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Credential:
        """Who calls, with which role; :class:`CredentialError` saying why if no one."""
        ssl_object = writer.get_extra_info("ssl_object")
        credential = authenticate(request.get("secret", b""), self.secret,
                                  lambda: peer_credential(ssl_object), request.get("caller"))
        if credential is None:
            raise CredentialError("wrong or missing secret (check hactl's secret_file) and "
                                  "no pool client certificate")
        if credential.id in self.host.denied_credentials():
            raise CredentialError(f"this credential ({credential.id}) is on the pool's deny "
                                  "list")
        return credential

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _close(streams: Streams) -> None:
    await close_quietly(streams[1])


async def exchange(endpoints: Sequence[tuple[str, int]], context: ssl.SSLContext,
                   secret: bytes, call: Call, relayed: bool = False,
                   timeout: float = RELAY_TIMEOUT, paths: PathMemory | None = None) -> Answer:
    """Send ``call`` to the first of ``endpoints`` that takes a TLS connection (tried
    in order, :data:`NEXT_ENDPOINT_DELAY` apart, :func:`~hacluster.wire.dial.first_open`;
    with ``paths``, the one that took the last call first); yield every answer frame
    up to the final one. :class:`Unreachable` if none did."""
    where = ", ".join(f"{address}:{port}" for address, port in endpoints)
    request = {**call.message(), "relayed": relayed}
    credentials: dict[str, object] = {"secret": secret}
    if "caller" in request:  # a relayed call's caller is part of its credentials
        credentials["caller"] = request.pop("caller")
    try:
        hello, ask = frame(credentials, PREAUTH_FRAME), frame(request, MAX_REQUEST)
    except (TypeError, ValueError, OverflowError) as error:
        raise ApiError(f"the call cannot be sent: {error}") from None
    async def connect(endpoint: tuple[str, int]) -> Streams:
        try:
            async with asyncio.timeout(min(timeout, CONNECT_TIMEOUT)):
                return await asyncio.open_connection(*endpoint, ssl=context)
        except ssl.SSLCertVerificationError:
            raise
        except OSError as error:
            raise Unreachable(f"{endpoint[0]}:{endpoint[1]}: {error.strerror or error}") \
                from None
        except TimeoutError:
            raise Unreachable(f"{endpoint[0]}:{endpoint[1]}: no connection within "
                              f"{min(timeout, CONNECT_TIMEOUT):g} s") from None

    try:
        async with asyncio.timeout(timeout):
            chosen, (reader, writer) = await first_open(endpoints, connect, _close,
                                                        NEXT_ENDPOINT_DELAY, paths=paths)
            where = "{}:{}".format(*endpoints[chosen])
            try:
                writer.write(hello)
                await writer.drain()
                welcome = await read_message(reader)
                if "authenticated" not in welcome:
                    yield welcome  # refused: the final answer
                    return
                writer.write(ask)
                await writer.drain()
                while True:
                    answer = await read_message(reader)
                    yield answer
                    if "progress" not in answer:
                        return
            finally:
                await close_quietly(writer)
    except TimeoutError:
        raise ApiError(f"{where}: no answer within {timeout} s") from None
    except ssl.SSLCertVerificationError as error:
        raise ApiError(f"{where}: its certificate is not from this pool's CA "
                       f"({error.verify_message}); check hactl's ca file") from None
    except FrameError as error:
        raise ApiError(f"{where}: connection lost or malformed answer ({error})") from None
    except (ssl.SSLError, ConnectionError) as error:
        raise ApiError(f"{where}: {error}") from None


def _verb_label(verb: object) -> str:
    """A request's verb as a metric label: only the verb table's names (a bounded set)."""
    return verb if isinstance(verb, str) and verb in VERBS else "unknown"


async def call(endpoints: Sequence[tuple[str, int]], context: ssl.SSLContext, secret: bytes,
               request: Call, progress: Callable[[str], None] = lambda _: None) -> Any:
    """The result of ``request`` from the first host that answers; :class:`ApiError` if none."""
    try:
        async for answer in exchange(endpoints, context, secret, request):
            if "progress" in answer:
                progress(str(answer["progress"]))
            elif answer.get("ok"):
                return answer.get("result")
            else:
                raise ApiError(str(answer.get("error", "failed without a reason")))
    except Unreachable as error:
        raise ApiError(f"no host of the pool answered: {error}") from None
    raise ApiError("the connection ended without a final answer")
