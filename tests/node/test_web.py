"""The node's HTTP face on a real socket: health, status, metrics, the page, and its guard."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hacluster.mgmt.roles import Role, role_secret
from hacluster.mgmt.tls import client_context, issue_certificate, server_context
from hacluster.node.config import HttpFace
from hacluster.node.healthcheck import node_configs
from hacluster.node.metrics import PHASES
from hacluster.node.status import SharedStatus
from hacluster.node.web import LIMITS, Guard, WebFace, health

from ..mgmt.test_tls import Pool, make_pool

SECRET = b"0123456789abcdef0123456789abcdef"
NORMAL = {"host": 1, "phase": "NORMAL", "armed": True, "master": False, "liveset": [0, 1, 2],
          "members": [0, 1, 2], "timeout": 3.0, "last_beat_age": {"0": 0.1, "2": 0.25},
          "last_slot_age": {"0": 0.2}, "dropped": {"stale": 2, "bad_packets": 0},
          "received_per_network": [40], "commits": 1, "failures": 1,
          "measured": {"slot_write": {"count": 3, "sum": 0.03, "max": 0.02, "p50": 0.005,
                                      "p99": 0.02},
                       "fault_handler": {"count": 0, "sum": 0.0, "max": 0.0, "p50": None,
                                         "p99": None}},
          "log": {"pending": 0, "dropped": 0}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Statuses:
    """The node's status, as a test sets it, counting how often it was taken."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.taken = 0

    async def __call__(self) -> dict[str, Any]:
        self.taken += 1
        return dict(self.status)


@contextlib.asynccontextmanager
async def face(statuses: Statuses, guard: Guard | None = None,
               context: ssl.SSLContext | None = None,
               pool: Any = None) -> AsyncIterator[WebFace]:
    loop = asyncio.get_running_loop()
    web = WebFace(HttpFace(free_port()), SharedStatus(statuses, loop.time, ttl=0.0), pool,
                  guard, context)
    await web.start()
    try:
        yield web
    finally:
        await web.stop()


async def get(url: str, **options: Any) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **options) as response:
        return response.status, response.content_type, await response.text()


# ---------------------------------------------------------------- health
@pytest.mark.parametrize(("status", "healthy", "reason"), [
    ({"phase": "NORMAL", "armed": True}, True, "armed and NORMAL"),
    ({"phase": "HA_OFF", "armed": False}, False, "HA is off"),
    ({"phase": "JOINING", "armed": False, "waiting": ["admission by 0"]}, False,
     "joining the pool: admission by 0"),
    ({"phase": "FENCED", "armed": True}, False, "fenced itself"),
    ({"phase": "STABILIZING", "armed": True}, False, "fault handler is running (STABILIZING)"),
    ({"phase": "UNKNOWN"}, False, "did not answer"),
    ({"phase": "NORMAL", "armed": False}, False, "fault handler"),
])
def test_health_is_armed_and_normal_and_says_why_not(status: dict[str, Any], healthy: bool,
                                                     reason: str) -> None:
    answer, why = health(status)
    assert answer is healthy
    assert reason in why


async def test_health_answers_200_then_503_with_the_reason() -> None:
    statuses = Statuses(dict(NORMAL))
    async with face(statuses) as web:
        code, kind, body = await get(web.url + "health")
        assert (code, kind) == (200, "application/json")
        assert '"healthy": true' in body
        statuses.status = {**NORMAL, "phase": "JOINING", "armed": False,
                           "waiting": ["a member to hear me"]}
        code, _, body = await get(web.url + "health")
        assert code == 503
        assert "joining the pool: a member to hear me" in body


# ---------------------------------------------------------------- metrics
async def test_metrics_are_prometheus_text_of_the_status() -> None:
    async with face(Statuses(dict(NORMAL))) as web:
        code, kind, text = await get(web.url + "metrics")
    assert code == 200
    assert kind.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    phase = {s.labels["phase"]: s.value for s in families["hacluster_phase"].samples}
    assert set(phase) == set(PHASES)
    assert [name for name, value in phase.items() if value == 1] == ["NORMAL"]
    ages = {(s.labels["peer"], s.labels["channel"]): s.value
            for s in families["hacluster_peer_last_seen_seconds"].samples}
    assert ages == {("0", "network"): 0.1, ("2", "network"): 0.25, ("0", "statefile"): 0.2}
    dropped = {s.labels["reason"]: s.value for s in families["hacluster_dropped_inputs"].samples
               if s.name.endswith("_total")}
    assert dropped == {"stale": 2, "bad_packets": 0}
    writes = {(s.name, s.labels.get("quantile")): s.value
              for s in families["hacluster_slot_write_seconds"].samples}
    assert writes[("hacluster_slot_write_seconds", "0.99")] == 0.02
    assert writes[("hacluster_slot_write_seconds_count", None)] == 3
    # a quantile of nothing is left out, not shown as zero; so is a master's plan here
    handler = families["hacluster_fault_handler_seconds"].samples
    assert [s.name for s in handler] == ["hacluster_fault_handler_seconds_count",
                                         "hacluster_fault_handler_seconds_sum"]
    assert "hacluster_plan_max_failures" not in families
    assert families["hacluster_liveset_hosts"].samples[0].value == 3
    assert families["hacluster_hosts_failed"].samples[0].value == 1


async def test_a_masters_metrics_show_its_plan_starts_and_api_calls() -> None:
    status = {**NORMAL, "master": True,
              "pool": {"running": {"vm-a": "h0"}, "halted": ["vm-b"],
                       "plan": {"max_failures": 1, "exact": True, "configured": 2,
                                "overcommitted": True, "why": ""},
                       "starts": [{"priority": "restart", "outcome": "started", "count": 4}]},
              "mgmt": {"generation": 17, "api": {"refused": 3},
                       "calls": [{"verb": "status", "result": "ok", "count": 5}]}}
    async with face(Statuses(status)) as web:
        _, _, text = await get(web.url + "metrics")
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("hacluster_plan_max_failures", ())] == 1
    assert values[("hacluster_plan_overcommitted", ())] == 1
    assert values[("hacluster_vm_starts_total",
                   (("outcome", "started"), ("priority", "restart")))] == 4
    assert values[("hacluster_api_calls_total", (("result", "ok"), ("verb", "status")))] == 5
    assert values[("hacluster_database_generation", ())] == 17
    assert values[("hacluster_vms_halted", ())] == 1


# ---------------------------------------------------------------- page and pool
async def test_the_page_and_its_files_are_served_and_nothing_else() -> None:
    async with face(Statuses(dict(NORMAL))) as web:
        code, kind, html = await get(web.url)
        assert (code, kind) == (200, "text/html")
        assert '<script src="page.js">' in html
        for name, kind_wanted in (("page.js", "text/javascript"), ("page.css", "text/css")):
            code, kind, _ = await get(web.url + name)
            assert (code, kind) == (200, kind_wanted)
        code, _, _ = await get(web.url + "../../etc/passwd")
        assert code == 404
        code, _, body = await get(web.url + "pool")
        assert code == 404 and "no management plane" in body


async def test_pool_is_the_masters_answer_shared_and_an_election_is_a_503() -> None:
    asked = 0
    answer: dict[str, Any] | Exception = {"pool": {"name": "p"}}

    async def pool() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with face(Statuses(dict(NORMAL)), pool=pool) as web:
        replies = await asyncio.gather(*(get(web.url + "pool") for _ in range(5)))
        assert {r[0] for r in replies} == {200}
        assert asked == 1  # five readers within POOL_TTL: the master was asked once
        answer = RuntimeError("no master right now")
        web.pool.ttl = 0.0  # type: ignore[union-attr]
        code, _, body = await get(web.url + "pool")
        assert code == 503 and "no master right now" in body


async def test_many_readers_take_one_status() -> None:
    statuses = Statuses(dict(NORMAL))
    release = asyncio.Event()

    async def slow() -> dict[str, Any]:
        await release.wait()
        return await statuses()

    shared = SharedStatus(slow, asyncio.get_running_loop().time, ttl=10.0)
    readers = [asyncio.ensure_future(shared()) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert all(r["phase"] == "NORMAL" for r in await asyncio.gather(*readers))
    assert statuses.taken == 1
    await shared()
    assert statuses.taken == 1  # still fresh


async def test_a_reader_that_gives_up_does_not_cancel_the_others() -> None:
    release = asyncio.Event()

    async def slow() -> dict[str, Any]:
        await release.wait()
        return {"phase": "NORMAL"}

    shared = SharedStatus(slow, asyncio.get_running_loop().time, ttl=10.0)
    impatient = asyncio.ensure_future(shared())
    patient = asyncio.ensure_future(shared())
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    assert (await patient)["phase"] == "NORMAL"


# ---------------------------------------------------------------- the guard (off loopback)
@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return make_pool(tmp_path / "pool", "pool-a", ("127.0.0.1",))


@contextlib.asynccontextmanager
async def guarded(pool: Pool, statuses: Statuses,
                  denied: frozenset[str] = frozenset()) -> AsyncIterator[WebFace]:
    context = server_context(pool.host, pool.ca.cert)
    async with face(statuses, Guard(SECRET, lambda: denied), context) as web:
        assert web.url.startswith("https://")
        yield web


async def test_off_loopback_nothing_is_done_for_a_caller_without_a_credential(
        pool: Pool) -> None:
    statuses = Statuses(dict(NORMAL))
    tls = client_context(pool.ca.cert)
    async with guarded(pool, statuses) as web:
        for path in ("health", "status", "metrics", "pool", ""):
            code, _, body = await get(web.url + path, ssl=tls)
            assert code == 401, path
            assert "authentication failed" in body
        for wrong in ("Bearer nope", f"Bearer {role_secret(b'x' * 32, Role.OPERATOR, 'eve')}",
                      "Basic YWRtaW46YWRtaW4="):
            code, _, _ = await get(web.url + "status", ssl=tls, headers={"Authorization": wrong})
            assert code == 401, wrong
        assert statuses.taken == 0  # no handler ran
        assert web.refused == 8


async def test_off_loopback_a_role_secret_or_a_client_certificate_reads(pool: Pool) -> None:
    statuses = Statuses(dict(NORMAL))
    reader = role_secret(SECRET, Role.READ_ONLY, "grafana")
    async with guarded(pool, statuses) as web:
        code, _, _ = await get(web.url + "metrics", ssl=client_context(pool.ca.cert),
                               headers={"Authorization": f"Bearer {reader}"})
        assert code == 200
        code, _, _ = await get(web.url + "health", ssl=client_context(pool.ca.cert, pool.admin))
        assert code == 200
    assert statuses.taken == 2


async def test_off_loopback_a_denied_credential_or_a_foreign_certificate_is_refused(
        pool: Pool, tmp_path: Path) -> None:
    statuses = Statuses(dict(NORMAL))
    reader = role_secret(SECRET, Role.READ_ONLY, "grafana")
    async with guarded(pool, statuses, denied=frozenset({"secret:read-only:grafana"})) as web:
        code, _, body = await get(web.url + "status", ssl=client_context(pool.ca.cert),
                                  headers={"Authorization": f"Bearer {reader}"})
        assert code == 401 and "deny list" in body
        other = make_pool(tmp_path / "other", "pool-b", ("127.0.0.1",))
        stranger = issue_certificate(other.ca, other.directory, "eve", client=True,
                                     role=Role.OPERATOR)
        with pytest.raises(aiohttp.ClientError):
            await get(web.url + "status", ssl=client_context(pool.ca.cert, stranger))
    assert statuses.taken == 0


async def test_garbage_and_oversized_requests_do_no_work() -> None:
    statuses = Statuses(dict(NORMAL))
    async with face(statuses) as web:
        for request in (b"\x00\xff garbage\r\n\r\n",
                        b"GET /status HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", web.face.port)
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.read(200), 5)
            assert re.match(rb"HTTP/1\.[01] 4\d\d ", head), head
            writer.close()
    assert statuses.taken == 0


def test_the_health_check_finds_the_node_daemon_running_here(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, argv in ((7, [b"bash"]), (42, [b"/opt/hacluster/bin/python", b"-m", b"hacluster",
                                            b"node", b"--config", b"/pool/host1/node.toml"]),
                      (43, [b"hacluster", b"node", b"--config", b"rel/node.toml"])):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
        (proc / str(pid) / "cwd").symlink_to(tmp_path)
    assert list(node_configs(proc)) == [Path("/pool/host1/node.toml"),
                                        tmp_path.resolve() / "rel/node.toml"]
    assert list(node_configs(tmp_path / "empty")) == []


# ---------------------------------------------------------------- admission (as every listener)
async def idle_connection(port: int, source: str = "127.0.0.1"
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def test_one_address_cannot_take_the_face_from_the_others() -> None:
    statuses = Statuses(dict(NORMAL))
    async with face(statuses) as web:
        held = [await idle_connection(web.face.port) for _ in range(LIMITS.per_peer)]
        reader, writer = await idle_connection(web.face.port)
        assert await asyncio.wait_for(reader.read(10), 5) == b""  # closed at once, unread
        writer.close()
        assert web.gate.turned_away == 1
        reader, writer = await idle_connection(web.face.port, "127.0.0.2")  # another address
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        for _, w in held:
            w.close()


async def test_a_trickling_client_holds_its_slot_no_longer_than_the_lifetime() -> None:
    statuses = Statuses(dict(NORMAL))
    async with face(statuses) as web:
        web.gate.limits = replace(LIMITS, lifetime=0.5)
        reader, writer = await idle_connection(web.face.port, "127.0.0.2")
        started = asyncio.get_running_loop().time()
        cut = False
        try:
            for byte in b"GET /status HTTP/1.1\r\nHost: x\r\n" * 4:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
            cut = await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionError:
            cut = True
        assert cut
        assert asyncio.get_running_loop().time() - started < 3
        assert web.gate.counts()["live"] == 0
    assert statuses.taken == 0


async def test_a_tls_face_cuts_a_connection_that_never_starts_tls(pool: Pool) -> None:
    statuses = Statuses(dict(NORMAL))
    async with guarded(pool, statuses) as web:
        web.gate.limits = replace(LIMITS, preauth=0.3)
        reader, _ = await idle_connection(web.face.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert web.gate.no_tls == 1
    assert statuses.taken == 0


async def test_seeded_garbage_never_reaches_a_handler_nor_stops_the_face() -> None:
    seed = 20261203
    rng = random.Random(seed)
    statuses = Statuses(dict(NORMAL))
    async with face(statuses) as web:
        for _ in range(120):
            reader, writer = await asyncio.open_connection("127.0.0.1", web.face.port)
            shape = rng.random()
            if shape < 0.4:  # noise
                data = rng.randbytes(rng.randrange(1, 3000))
            elif shape < 0.8:  # a request line with a mangled method, path or version
                data = (rng.choice([b"GET", b"G\x00T", b"POST", b"\xff\xfe", b"get"]) + b" /"
                        + rng.randbytes(rng.randrange(0, 40)) + b" HTTP/1."
                        + rng.choice([b"1", b"9", b"\x00"]) + b"\r\n\r\n")
            else:  # headers that never end, then a close
                data = b"GET /status HTTP/1.1\r\n" + b"X: y\r\n" * rng.randrange(1, 300)
            with contextlib.suppress(ConnectionError):
                writer.write(data)
                await writer.drain()
                writer.close()
                await asyncio.wait_for(reader.read(), 5)
        code, _, _ = await get(web.url + "health")
    assert code == 200, f"seed {seed}"
    assert statuses.taken == 1, f"seed {seed}: a handler ran for garbage"
