"""Alerts beyond mail: a script on the host, and a webhook.

Rules:

* Configured in the pool's other-config: ``alert-script`` names a script
  (letters, digits, ``.``, ``_``, ``-``: a name, never a path) that the host
  raising the alert runs from its own ``alert_dir`` (``node.toml``, set by the
  host's administrator). So the pool database, which an operator may change,
  picks among scripts the host's administrator put there; it never names an
  arbitrary program to run. ``alert-webhook`` is an ``https://`` URL, or
  ``http://`` to a loopback address only (a local relay), and
  ``alert-webhook-ca-file`` (optional) a PEM file on the hosts to trust
  instead of the system's CAs. :func:`check` refuses anything else when the
  values are set, naming the key, the value and what is expected.
* The script gets the alert as JSON on stdin and in environment variables
  (``HACLUSTER_ALERT_NAME``, ``_OBJ``, ``_BODY``, ``_PRIORITY``, ``_TIME``,
  ``HACLUSTER_POOL``), as Pacemaker's alert agents do, and must end within
  :data:`SCRIPT_TIMEOUT`; otherwise it and every process it started (its
  session) are killed. A non-zero exit is a failure.
* The webhook gets the same JSON in a POST, up to :data:`ATTEMPTS` times
  (after 1, then 2 s) until it answers 2xx, each within :data:`POST_TIMEOUT`.
* Delivery never blocks the event loop and never raises but :class:`HookError`,
  which says what failed; the caller logs it (an alert that cannot be
  delivered is no reason to stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import signal
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

SCRIPT_KEY = "alert-script"
WEBHOOK_KEY = "alert-webhook"
WEBHOOK_CA_KEY = "alert-webhook-ca-file"
SCRIPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SCRIPT_TIMEOUT = 30.0
POST_TIMEOUT = 10.0
ATTEMPTS = 3
MAX_OUTPUT = 2000  # characters of a script's output kept for the log


class HookError(ValueError):
    """A hook that is misconfigured or failed, and why."""


@dataclass(frozen=True)
class Hooks:
    script: str | None = None
    webhook: str | None = None
    webhook_ca: Path | None = None


def check(other_config: Mapping[str, str]) -> Hooks:
    """The hooks ``other_config`` sets; :class:`HookError` naming a bad value."""
    script = other_config.get(SCRIPT_KEY) or None
    if script is not None and not SCRIPT_NAME.fullmatch(script):
        raise HookError(f"other-config:{SCRIPT_KEY}={script!r}: give the name of a script "
                        "in each host's alert_dir (letters, digits, '.', '_', '-'), not a path")
    webhook = other_config.get(WEBHOOK_KEY) or None
    if webhook is not None:
        _check_url(webhook)
    ca = other_config.get(WEBHOOK_CA_KEY) or None
    if ca is not None and not Path(ca).is_absolute():
        raise HookError(f"other-config:{WEBHOOK_CA_KEY}={ca!r}: give an absolute path")
    return Hooks(script, webhook, Path(ca) if ca else None)


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return
        except ValueError:
            pass
    raise HookError(f"other-config:{WEBHOOK_KEY}={url!r}: give an https:// URL (http:// only "
                    "to a loopback address)")


def payload(alert: Mapping[str, Any], pool: str) -> dict[str, Any]:
    return {"pool": pool, "name": alert["name"], "priority": alert["priority"],
            "obj": alert["obj"], "body": alert["body"], "time": alert["time"]}


async def run_script(alert_dir: Path | None, name: str, body: Mapping[str, Any]) -> str:
    """Run script ``name`` of ``alert_dir`` with ``body``; what it said, or :class:`HookError`."""
    if alert_dir is None:
        raise HookError(f"alert-script {name!r} is set but this host has no alert_dir in "
                        "its node.toml")
    path = alert_dir / name
    if not os.access(path, os.X_OK) or not path.is_file():
        raise HookError(f"alert-script {path} is not an executable file on this host")
    env = {**os.environ, "HACLUSTER_POOL": str(body["pool"]),
           **{f"HACLUSTER_ALERT_{key.upper()}": str(body[key])
              for key in ("name", "obj", "body", "priority", "time")}}
    process = await asyncio.create_subprocess_exec(
        str(path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
    try:
        async with asyncio.timeout(SCRIPT_TIMEOUT):
            output, _ = await process.communicate(json.dumps(body).encode())
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):  # it and whatever it started
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise HookError(f"alert-script {path} did not end within {SCRIPT_TIMEOUT:g} s: "
                        "killed") from None
    text = output.decode(errors="replace")[-MAX_OUTPUT:].strip()
    if process.returncode != 0:
        raise HookError(f"alert-script {path} exited with {process.returncode}: {text}")
    return text


async def post_webhook(url: str, body: Mapping[str, Any], ca_file: Path | None = None,
                       pause: float = 1.0) -> int:
    """POST ``body`` to ``url`` until it answers 2xx; its status, or :class:`HookError`."""
    _check_url(url)
    context: ssl.SSLContext | bool = True
    if ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as error:
            raise HookError(f"{WEBHOOK_CA_KEY} {ca_file}: {error}") from None
    errors: list[str] = []
    timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(pause * 2 ** (attempt - 1))
            try:
                async with session.post(url, json=dict(body), ssl=context) as answer:
                    if 200 <= answer.status < 300:
                        return answer.status
                    errors.append(f"HTTP {answer.status}")
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                errors.append(f"{type(error).__name__}: {error}" if str(error)
                              else type(error).__name__)
    raise HookError(f"alert-webhook {url}: {ATTEMPTS} attempts failed: {'; '.join(errors)}")
