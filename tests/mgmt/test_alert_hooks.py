"""Alerts beyond mail: a real script and a real local HTTP(S) server receive them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hacluster.mgmt import alert_hooks
from hacluster.mgmt.alert_hooks import HookError, check, payload, post_webhook, run_script
from hacluster.mgmt.tls import issue_certificate, server_context

from .test_tls import make_pool

ALERT = {"name": "ha_host_failed", "priority": 2, "obj": "host-0000",
         "body": "host host0 failed and has fenced", "time": 1764750000.5}
BODY = payload(ALERT, "lab")


@pytest.mark.parametrize(("config", "message"), [
    ({"alert-script": "/usr/bin/rm"}, "not a path"),
    ({"alert-script": "../x"}, "not a path"),
    ({"alert-webhook": "http://example.com/hook"}, "http:// only"),
    ({"alert-webhook": "ftp://127.0.0.1/x"}, "https://"),
    ({"alert-webhook": "https://"}, "https://"),
    ({"alert-webhook-ca-file": "ca.pem"}, "absolute path"),
])
def test_bad_hook_settings_are_named(config: dict[str, str], message: str) -> None:
    with pytest.raises(HookError, match=message):
        check(config)


def test_good_hook_settings() -> None:
    hooks = check({"alert-script": "page-oncall.sh", "alert-webhook": "https://hooks.example/x",
                   "alert-webhook-ca-file": "/etc/hacluster/hook-ca.pem"})
    assert (hooks.script, hooks.webhook, str(hooks.webhook_ca)) == (
        "page-oncall.sh", "https://hooks.example/x", "/etc/hacluster/hook-ca.pem")
    assert check({"alert-webhook": "http://127.0.0.1:9/x", "alert-script": ""}).script is None


def script(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


async def test_the_script_gets_the_alert_on_stdin_and_in_its_environment(
        tmp_path: Path) -> None:
    got = tmp_path / "got"
    script(tmp_path, "record.sh", f'cat > {got}.json; env | grep ^HACLUSTER_ | sort > {got}.env\n'
                                  'echo delivered\n')
    assert await run_script(tmp_path, "record.sh", BODY) == "delivered"
    assert json.loads((tmp_path / "got.json").read_text()) == BODY
    env = dict(line.split("=", 1) for line in (tmp_path / "got.env").read_text().splitlines())
    assert env["HACLUSTER_ALERT_NAME"] == "ha_host_failed"
    assert env["HACLUSTER_ALERT_BODY"] == ALERT["body"]
    assert env["HACLUSTER_POOL"] == "lab" and env["HACLUSTER_ALERT_PRIORITY"] == "2"


async def test_a_failing_hanging_or_missing_script_is_a_hook_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script(tmp_path, "fails.sh", "echo broken >&2; exit 3\n")
    with pytest.raises(HookError, match="exited with 3: broken"):
        await run_script(tmp_path, "fails.sh", BODY)
    script(tmp_path, "hangs.sh", f"sleep 300 & echo $! > {tmp_path}/child; wait\n")
    monkeypatch.setattr(alert_hooks, "SCRIPT_TIMEOUT", 0.3)
    with pytest.raises(HookError, match=r"did not end within 0\.3 s: killed"):
        # a hang, not a figure: killing only the script left its child holding the pipe
        await asyncio.wait_for(run_script(tmp_path, "hangs.sh", BODY), 20)
    child = int((tmp_path / "child").read_text())
    for _ in range(50):  # what the script started is killed with it (then reaped by init)
        if not _alive(child):
            break
        await asyncio.sleep(0.1)
    assert not _alive(child)
    with pytest.raises(HookError, match="not an executable file"):
        await run_script(tmp_path, "absent.sh", BODY)
    with pytest.raises(HookError, match="no alert_dir"):
        await run_script(None, "fails.sh", BODY)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def receiver(fail_first: int = 0, context: ssl.SSLContext | None = None
                   ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP(S) server recording every POST; the first ``fail_first`` get 503."""
    got: list[dict[str, Any]] = []
    calls = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls <= fail_first:
            return web.Response(status=503)
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{port}/hook", got
    finally:
        await runner.cleanup()


async def test_the_webhook_gets_the_alert_and_is_retried() -> None:
    async with receiver(fail_first=2) as (url, got):
        assert await post_webhook(url, BODY, pause=0.05) == 204
    assert got == [BODY]
    async with receiver(fail_first=5) as (url, got):
        with pytest.raises(HookError, match="3 attempts failed: HTTP 503; HTTP 503; HTTP 503"):
            await post_webhook(url, BODY, pause=0.05)
    assert got == []


async def test_an_https_webhook_is_verified_against_its_ca(tmp_path: Path) -> None:
    pool = make_pool(tmp_path / "pool", "hooks", ("127.0.0.1",))
    server = server_context(issue_certificate(pool.ca, pool.directory, "hook", ["127.0.0.1"]))
    async with receiver(context=server) as (url, got):
        assert await post_webhook(url, BODY, pool.ca.cert, pause=0.05) == 204
        with pytest.raises(HookError, match="certificate verify failed"):
            await post_webhook(url, BODY, pause=0.05)  # the system's CAs do not know it
    assert got == [BODY]


async def test_nothing_listening_is_a_hook_error_not_a_crash() -> None:
    with pytest.raises(HookError, match="3 attempts failed"):
        await asyncio.wait_for(post_webhook(f"http://127.0.0.1:{free_port()}/x", BODY,
                                            pause=0.01), 30)
