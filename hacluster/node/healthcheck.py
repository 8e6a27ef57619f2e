"""``hacluster health``: ask a node's ``/health`` from the same host, for container
health checks and scripts.

Rules:

* The node is the one ``--config`` names, else the node daemon running on
  this host (the first ``hacluster node --config FILE`` process in ``/proc``),
  so an image's ``HEALTHCHECK`` needs no path.
* Its ``node.toml`` says where the HTTP face listens; one without
  ``http_port`` is an error that says so. Off loopback the check speaks TLS,
  trusts the pool CA only, and shows the pool secret as its credential.
* Exit status 0 when the node says healthy (200), 1 otherwise: unhealthy
  (503, its reason printed), not answering, or no node found, each said on
  one line. Docker and systemd read only the status.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from hacluster.mgmt.tls import client_context
from hacluster.node.config import Candidate, ConfigError, NodeConfig, load_node

TIMEOUT = 3.0


def node_configs(proc: Path = Path("/proc")) -> Iterable[Path]:
    """The ``--config`` of every ``hacluster node`` process on this host."""
    for entry in sorted(proc.glob("[0-9]*/cmdline")):
        try:
            words = entry.read_bytes().split(b"\0")
        except OSError:
            continue  # it ended while we looked
        text = [w.decode(errors="replace") for w in words]
        if "node" in text and "--config" in text and any("hacluster" in w for w in text):
            where = text.index("--config") + 1
            if where < len(text) and text[where]:
                cwd = entry.parent / "cwd"
                path = Path(text[where])
                yield path if path.is_absolute() else cwd.resolve() / path


def check(config: Path | None) -> tuple[int, str]:
    """(exit status, a line saying why)."""
    if config is None:
        config = next(iter(node_configs()), None)
        if config is None:
            return 1, "no hacluster node daemon runs on this host (or give --config)"
    try:
        loaded = load_node(config)
    except (ConfigError, OSError) as error:
        return 1, f"{config}: {error}"
    node = loaded.config if isinstance(loaded, Candidate) else loaded
    return ask(node)


def ask(node: NodeConfig) -> tuple[int, str]:
    face = node.http
    if face is None:
        return 1, "this node serves no HTTP: set http_port in its node.toml"
    host = f"[{face.address}]" if ":" in face.address else face.address
    request = urllib.request.Request(f"{'http' if face.loopback else 'https'}://{host}:"
                                     f"{face.port}/health")
    context: ssl.SSLContext | None = None
    if not face.loopback:
        assert node.mgmt is not None  # the configuration demands it off loopback
        context = client_context(node.mgmt.ca)
        request.add_header("Authorization", f"Bearer {node.mgmt.secret.decode()}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as answer:
            body = json.loads(answer.read())
            return 0, f"healthy: {body.get('reason', '')}"
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read()).get("reason") or error.reason
        except ValueError:
            reason = error.reason
        return 1, f"unhealthy ({error.code}): {reason}"
    except (OSError, ValueError) as error:
        return 1, f"the node does not answer on {request.full_url}: {error}"
