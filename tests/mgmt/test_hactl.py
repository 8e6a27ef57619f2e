"""hactl: parsing, configuration, rendering, help, bash completion, and calls over real TLS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hacluster import __version__
from hacluster.mgmt import api
from hacluster.mgmt import hactl as hactl_module
from hacluster.mgmt.hactl import main
from hacluster.mgmt.render import render
from hacluster.mgmt.tls import client_context, server_context
from hacluster.mgmt.verbs import VERBS, Call

from .test_tls import Pool, make_pool

LOOPBACK = "127.0.0.1"
SECRET = "s3cret-of-the-pool"


# ---------------------------------------------------------------- fixtures


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def hactl(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    def run(*argv: str) -> Run:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)
    return run


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    (tmp_path / "pool.secret").write_text(f"  {SECRET}\n")
    return make_pool(tmp_path / "pool", "lab", (LOOPBACK,))


def write_config(directory: Path, servers: list[str], **fields: str) -> Path:
    """hactl.toml in ``directory``: ``servers``, then ca and secret_file unless overridden."""
    values = {"ca": "pool/ca.pem", "secret_file": "pool.secret", **fields}
    lines = [f"servers = {json.dumps(servers)}",
             *(f"{key} = {json.dumps(value)}" for key, value in values.items() if value)]
    path = directory / "hactl.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class FakeHost:
    """The daemon side of the API: a master that answers every call with ``result``."""

    result: Any
    calls: list[Call] = field(default_factory=list)

    def is_master(self) -> bool:
        return True

    def master_endpoints(self) -> list[tuple[str, int]]:
        return []

    def answers_without_master(self, verb: str) -> bool:
        return False

    def denied_credentials(self) -> frozenset[str]:
        return frozenset()

    async def answer(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(call)
        yield {"progress": f"working on {call.verb}"}
        yield {"ok": True, "result": self.result}


@dataclass
class FailingHost(FakeHost):
    """A master whose storage fails in the middle of a change."""

    async def answer(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(call)
        yield {"progress": f"working on {call.verb}"}
        raise OSError(5, "Input/output error")


@contextlib.contextmanager
def api_server(host: FakeHost, pool: Pool, secret: bytes = SECRET.encode()) -> Iterator[int]:
    """An API server on the loopback address, run by its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = api.Server(host, secret, server_context(pool.host, pool.ca.cert),
                        client_context(pool.ca.cert))
    listener = asyncio.run_coroutine_threadsafe(server.serve(LOOPBACK, 0), loop).result(10)

    async def close() -> None:
        listener.close()
        await listener.wait_closed()

    try:
        yield int(listener.sockets[0].getsockname()[1])
    finally:
        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A plain TCP listener: any connection attempt to it is left pending in its backlog."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def connection_attempted(sock: socket.socket) -> bool:
    try:
        accepted, _ = sock.accept()
    except BlockingIOError:
        return False
    accepted.close()
    return True


@pytest.fixture(autouse=True)
def no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HACTL_CONFIG", raising=False)


# ---------------------------------------------------------------- usage errors


USAGE_ERRORS = [
    (["frobnicate"], "unknown verb 'frobnicate'"),
    (["vm-list", "uuid"], "vm-list: expected key=value, got 'uuid'"),
    (["vm-list", "colour=red"], "vm-list: unknown parameter 'colour'; accepted: params, uuid"),
    (["vm-param-get", "uuid=vm-sql"], "vm-param-get: missing param-name=..."),
    (["vm-list", "uuid=a", "uuid=b"], "vm-list: uuid given twice"),
    (["vm-list", "--force"], "vm-list: unknown flag '--force'; accepted: none"),
    (["--bogus", "status"], "unknown option '--bogus'"),
    ([], "no verb given; try 'hactl help'"),
    (["help", "frobnicate"], "unknown verb 'frobnicate'"),
    (["help", "vm-list", "host-list"], "help takes one verb at most"),
    (["--completion", "zsh"], "no completion for 'zsh'; supported: bash"),
    (["status", "--config"], "--config needs a value"),
    (["--watch", "pool-ha-enable"], "--watch repeats a verb that only reads"),
    (["--watch=0", "status"], "--watch takes seconds from 0.5 to 3600"),
    (["--watch=nan", "status"], "--watch takes seconds"),
]


@pytest.mark.parametrize(("argv", "message"), USAGE_ERRORS)
def test_usage_error_exits_2_with_one_line_and_never_connects(
        hactl: Callable[..., Run], listener: socket.socket, tmp_path: Path, pool: Pool,
        argv: list[str], message: str) -> None:
    port = listener.getsockname()[1]
    config = write_config(tmp_path, [f"{LOOPBACK}:{port}"])
    # the config is valid and points at the listener: only the usage check stops the call
    run = hactl("--config", str(config), "-s", f"{LOOPBACK}:{port}", *argv)
    assert run.code == 2
    assert run.out == ""
    assert run.err.startswith("hactl: ") and run.err.count("\n") == 1
    assert message in run.err
    assert not connection_attempted(listener)


def test_version(hactl: Callable[..., Run]) -> None:
    run = hactl("--version")
    assert (run.code, run.out) == (0, f"hactl {__version__}\n")


def test_watch_repeats_a_read_verb_until_interrupted(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(hactl_module, "time", SimpleNamespace(sleep=sleep, strftime=time.strftime))
    host = FakeHost(VMS)
    with api_server(host, pool) as port:
        config = write_config(tmp_path, [f"{LOOPBACK}:{port}"])
        run = hactl("--config", str(config), "--watch=1.5", "vm-list")
    assert run.code == 0 and naps == [1.5, 1.5, 1.5]
    assert run.out.count("every 1.5 s: hactl vm-list") == 3
    assert run.out.count("\x1b[2J") == 3


def test_usage_error_needs_no_configuration(hactl: Callable[..., Run]) -> None:
    run = hactl("vm-list", "colour=red")
    assert run.code == 2
    assert "unknown parameter 'colour'" in run.err
    assert "configuration" not in run.err


def test_the_connection_detector_sees_an_attempt(listener: socket.socket) -> None:
    with socket.create_connection(listener.getsockname(), timeout=5):
        pass
    assert connection_attempted(listener)


# ---------------------------------------------------------------- configuration errors


def _missing_file(tmp_path: Path) -> list[str]:
    return ["--config", str(tmp_path / "nowhere.toml")]


def _invalid_toml(tmp_path: Path) -> list[str]:
    path = tmp_path / "hactl.toml"
    path.write_text("servers = [\n")
    return ["--config", str(path)]


def _with(servers: list[str] | None = None, **fields: str) -> Callable[[Path], list[str]]:
    def argv(tmp_path: Path) -> list[str]:
        return ["--config", str(write_config(tmp_path, servers or ["10.77.0.1:7100"], **fields))]
    return argv


def _empty_servers(tmp_path: Path) -> list[str]:
    return ["--config", str(write_config(tmp_path, []))]


def _bad_server_option(tmp_path: Path) -> list[str]:
    return [*_with()(tmp_path), "-s", "10.77.0.1"]


def _empty_secret(tmp_path: Path) -> list[str]:
    (tmp_path / "pool.secret").write_text(" \n")
    return _with()(tmp_path)


CONFIG_ERRORS: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("no configuration", lambda _: [], "no configuration: pass --config FILE or set HACTL_CONFIG"),
    ("missing file", _missing_file, "nowhere.toml: No such file or directory"),
    ("invalid toml", _invalid_toml, "not valid TOML"),
    ("missing ca", _with(ca=""), "missing field 'ca', e.g. ca = \"ca.pem\""),
    ("ca not found", _with(ca="nope.pem"), "nope.pem: certificate file not found"),
    ("bad address", _with(["10.77.0.1"]), "servers[0]: expected host:port, got '10.77.0.1'"),
    ("name, not address", _with(["10.77.0.1:7100", "alpha:7100"]),
     "servers[1]: 'alpha' is not an IPv4 or IPv6 address"),
    ("bad -s", _bad_server_option, "-s: expected host:port, got '10.77.0.1'"),
    ("no servers", _empty_servers, "'servers' must list every host's management address"),
    ("missing secret file", _with(secret_file="gone.secret"),
     "gone.secret: No such file or directory"),
    ("empty secret", _empty_secret, "is empty; copy the pool secret into it"),
    ("no credentials", _with(secret_file=""), "missing field 'secret_file' (the pool secret)"),
    ("cert without key", _with(cert="pool/admin.pem"), "'cert' and 'key' go together"),
    ("unknown field", _with(colour="red"), "unknown field(s) ['colour']"),
]


@pytest.mark.parametrize(("argv_of", "message"), [(a, m) for _, a, m in CONFIG_ERRORS],
                         ids=[name for name, _, _ in CONFIG_ERRORS])
def test_configuration_error_exits_2_with_what_to_fix(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool,
        argv_of: Callable[[Path], list[str]], message: str) -> None:
    run = hactl(*argv_of(tmp_path), "status")
    assert run.code == 2
    assert run.out == ""
    assert run.err.startswith("hactl: ") and run.err.count("\n") == 1
    assert message in run.err


# ---------------------------------------------------------------- rendering


def test_list_records_align_colons_and_mark_settable_keys() -> None:
    records = [{"name-label": "sql", "uuid": "vm-sql", "ha-restart-priority": "restart",
                "power-state": "running", "other-config": {"a": "1", "b": "2"}},
               {"uuid": "vm-web", "tags": ["x", "y"], "ha-always-run": False}]
    assert render("vm-list", records) == """\
uuid ( RO)               : vm-sql
         name-label ( RW): sql
ha-restart-priority ( RW): restart
        power-state ( RO): running
       other-config ( RO): a: 1; b: 2

uuid ( RO)         : vm-web
         tags ( RO): x; y
ha-always-run ( RO): false"""


def test_pool_list_map_keys_are_settable_host_list_keys_are_not() -> None:
    pool = [{"uuid": "pool-1", "name-label": "lab", "other-config": {"mail": "ops@lab"}}]
    assert render("pool-list", pool) == """\
uuid ( RO)        : pool-1
  name-label ( RW): lab
other-config ( RW): mail: ops@lab"""
    hosts = [{"uuid": "host-a", "name-label": "alpha"}]
    assert render("host-list", hosts) == "uuid ( RO)      : host-a\nname-label ( RO): alpha"
    assert render("vm-list", []) == ""


def test_message_list_puts_the_ref_first_and_time_in_utc() -> None:
    messages = [{"name": "HA_HOST_FAILED", "ref": "msg-1", "priority": 2, "obj": "host-b",
                 "body": "host beta failed", "time": 1700000000.5}]
    assert render("message-list", messages) == """\
ref ( RO)     : msg-1
    name ( RO): HA_HOST_FAILED
priority ( RO): 2
     obj ( RO): host-b
    body ( RO): host beta failed
    time ( RO): 2023-11-14T22:13:20Z"""


@pytest.mark.parametrize(("verb", "result", "text"), [
    ("vm-param-get", "restart", "restart"),
    ("pool-param-get", True, "true"),
    ("host-param-get", 4096, "4096"),
    ("pool-param-get", {"timeout": "30"}, "timeout: 30"),
    ("vm-param-set", None, ""),
    ("host-disable", "host alpha disabled", "host alpha disabled"),
    ("pool-ha-enable", None, ""),
    ("host-emergency-ha-disable", "HA disarmed on this host", "HA disarmed on this host"),
    ("diagnostic-vm-status", ["vm sql: restartable", "on alpha: 2048 MiB free"],
     "vm sql: restartable\non alpha: 2048 MiB free"),
    ("pool-ha-compute-max-host-failures-to-tolerate", {"max": 2, "exact": True, "why": ""},
     "2"),
    ("pool-ha-compute-max-host-failures-to-tolerate",
     {"max": 1, "exact": False, "why": "search stopped after 10000 plans"},
     "1\n(a proven lower bound: search stopped after 10000 plans)"),
])
def test_scalar_and_special_results(verb: str, result: Any, text: str) -> None:
    assert render(verb, result) == text


STATUS: dict[str, Any] = {
    "pool": {"name": "lab", "uuid": "pool-1", "master": "host-a", "ha_enabled": True,
             "timeout": 30.0,
             "tolerance": {"max": 1, "exact": False, "configured": 2, "overcommitted": True}},
    "hosts": [
        {"uuid": "host-a", "name": "alpha", "address": "10.77.0.1:7100", "enabled": True,
         "live": True, "master": True, "vms": 3, "memory": {"total": 4096, "free": 2304}},
        {"uuid": "host-b", "name": "beta", "address": "10.77.0.2:7100", "enabled": False,
         "live": False, "master": False, "vms": 0, "memory": {"total": 4096, "free": 4096}},
    ],
    "vms": [
        {"uuid": "vm-web", "name": "web", "priority": "restart", "order": 1,
         "power": "running", "host": "host-a"},
        {"uuid": "vm-sql", "name": "sql", "priority": "restart", "order": 0,
         "power": "running", "host": "host-a"},
        {"uuid": "vm-db2", "name": "db2", "priority": "restart", "order": 1,
         "power": "halted", "host": None},
        {"uuid": "vm-batch", "name": "batch", "priority": "best-effort", "order": 0,
         "power": "running", "host": "host-a"},
    ],
    "memory_by_priority": {"host-a": {"restart": 1536, "best-effort": 256, "": 0},
                           "host-b": {"restart": 0, "best-effort": 0, "": 0}},
}


def test_status_overview() -> None:
    assert render("status", STATUS) == """\
pool lab: HA on (timeout 30 s), master alpha
failures tolerated: 1 (bound) of 2 configured OVERCOMMITTED

hosts (memory in MiB):
  HOST   ADDRESS         STATE  PLACEMENT  ROLE    VMS  FREE/TOTAL  RESTART  BEST-EFFORT  UNPROTECTED
  alpha  10.77.0.1:7100  live   enabled    master  3    2304/4096   1536     256          0
  beta   10.77.0.2:7100  DOWN   disabled           0    4096/4096   0        0            0

restart (3 VMs):
  sql    order 0  running  alpha
  db2    order 1  halted   -
  web    order 1  running  alpha
best-effort (1 VM):
  batch  order 0  running  alpha
unprotected: no VMs"""  # noqa: E501


def test_status_with_ha_off_and_no_master() -> None:
    pool = {**STATUS["pool"], "ha_enabled": False, "master": None,
            "tolerance": {"max": 2, "exact": True, "configured": 1, "overcommitted": False}}
    first, second = render("status", {**STATUS, "pool": pool}).splitlines()[:2]
    assert first == "pool lab: HA off, master none known"
    assert second == "failures tolerated: 2 (exact) of 1 configured"


# ---------------------------------------------------------------- help


def test_help_lists_every_verb_with_its_summary(hactl: Callable[..., Run]) -> None:
    run = hactl("help")
    assert (run.code, run.err) == (0, "")
    for verb in VERBS.values():
        assert any(line.split()[:1] == [verb.name] and line.endswith(verb.summary)
                   for line in run.out.splitlines()), verb.name
    assert "HACTL_CONFIG" in run.out


def test_help_verb_marks_required_parameters_and_lists_flags(hactl: Callable[..., Run]) -> None:
    lines = hactl("help", "vm-param-get").out.splitlines()
    assert lines[0] == "hactl vm-param-get: one VM parameter"
    assert [line.split() for line in lines if "=..." in line] == [
        ["uuid=...", "(required)"], ["param-name=...", "(required)"]]
    run = hactl("help", "pool-ha-enable")
    assert "  ha-config:KEY=..." in run.out.splitlines()
    assert "(required)" not in run.out
    emergency = hactl("host-emergency-ha-disable", "--help").out
    assert "flags:\n  --force" in emergency
    assert "without a master" in emergency
    assert hactl("-h").out == hactl("help").out


# ---------------------------------------------------------------- bash completion


def complete(script: Path, *words: str) -> list[str]:
    """COMPREPLY of _hactl for ``hactl WORDS``, the last word being the one completed."""
    program = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _hactl; '
               'for word in "${COMPREPLY[@]}"; do printf "%s|\\n" "$word"; done')
    out = subprocess.run(["bash", "-c", program, "bash", str(script), "hactl", *words],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return [line.removesuffix("|") for line in out.splitlines()]


@pytest.fixture
def script(hactl: Callable[..., Run], tmp_path: Path) -> Path:
    run = hactl("--completion", "bash")
    assert run.code == 0
    path = tmp_path / "hactl.bash"
    path.write_text(run.out)
    return path


def test_completion_of_verbs_and_options(script: Path) -> None:
    assert complete(script, "vm-") == [
        "vm-list ", "vm-param-get ", "vm-param-set ", "vm-install ", "vm-uninstall ",
        "vm-start ", "vm-shutdown ", "vm-reboot ", "vm-suspend ", "vm-resume ", "vm-migrate "]
    assert complete(script, "--c") == ["--config ", "--completion "]
    assert complete(script, "--config", "hactl.toml", "sta") == ["status "]
    assert complete(script, "-s", "10.77.0.1", ":", "7100", "host-e") == [
        "host-enable ", "host-evacuate ", "host-emergency-ha-disable "]
    assert complete(script, "help", "pool-emergency-") == [
        "pool-emergency-transition-to-master ", "pool-emergency-reset-master "]


def test_completion_of_keys_without_space_and_flags_with_one(script: Path) -> None:
    assert complete(script, "vm-param-set", "") == [
        "uuid=", "name-label=", "ha-restart-priority=", "order=", "start-delay=", "ready=",
        "--force "]
    assert complete(script, "pool-ha-enable", "ha") == ["ha-config:"]
    assert complete(script, "host-emergency-ha-disable", "") == ["--force "]
    assert complete(script, "status", "") == []


def test_completion_skips_given_keys_and_values(script: Path) -> None:
    assert complete(script, "vm-param-get", "uuid", "=", "vm-sql", "") == ["param-name="]
    assert complete(script, "vm-param-get", "uuid=vm-sql", "") == ["param-name="]
    assert complete(script, "vm-param-get", "uuid", "=", "") == []
    assert complete(script, "vm-param-get", "uuid", "=") == []


# ---------------------------------------------------------------- over real TLS


VMS = [{"uuid": "vm-sql", "name-label": "sql", "ha-restart-priority": "restart"}]


def test_call_over_tls_prints_progress_and_result(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool) -> None:
    host = FakeHost(VMS)
    with api_server(host, pool) as port:
        config = write_config(tmp_path, [f"{LOOPBACK}:{closed_port()}", f"{LOOPBACK}:{port}"])
        run = hactl("--config", str(config), "vm-list", "ha-restart-priority=restart")
    assert (run.code, run.err) == (0, "working on vm-list\n")
    assert run.out == render("vm-list", VMS) + "\n"
    assert host.calls == [Call("vm-list", {"ha-restart-priority": "restart"})]


def test_json_output_with_config_from_environment(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with api_server(FakeHost(STATUS), pool) as port:
        monkeypatch.setenv("HACTL_CONFIG", str(write_config(tmp_path, [f"{LOOPBACK}:{port}"])))
        run = hactl("status", "--json")
    assert run.code == 0
    assert run.out == json.dumps(STATUS, indent=2, sort_keys=True) + "\n"


def test_server_option_replaces_configured_servers_and_client_cert_replaces_secret(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool) -> None:
    host = FakeHost(None)
    config = write_config(tmp_path, [f"{LOOPBACK}:{closed_port()}"], secret_file="",
                          cert="pool/admin.pem", key="pool/admin.key")
    with api_server(host, pool) as port:
        run = hactl("--config", str(config), "-s", f"{LOOPBACK}:{port}", "host-disable",
                    "uuid=host-b")
    assert (run.code, run.out, run.err) == (0, "", "working on host-disable\n")
    assert host.calls == [Call("host-disable", {"uuid": "host-b"})]


def test_wrong_secret_is_refused_with_exit_1(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool) -> None:
    host = FakeHost(VMS)
    with api_server(host, pool, secret=b"another secret") as port:
        run = hactl("--config", str(write_config(tmp_path, [f"{LOOPBACK}:{port}"])), "vm-list")
    assert (run.code, run.out) == (1, "")
    assert run.err.startswith("hactl: authentication failed")
    assert host.calls == []


def test_no_host_answering_is_exit_1(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool) -> None:
    port = closed_port()
    run = hactl("--config", str(write_config(tmp_path, [f"{LOOPBACK}:{port}"])), "status")
    assert (run.code, run.out) == (1, "")
    assert run.err.startswith(f"hactl: no host of the pool answered: {LOOPBACK}:{port}")


def test_an_answer_of_unexpected_shape_is_exit_1(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool) -> None:
    with api_server(FakeHost(["not", "a", "status"]), pool) as port:
        run = hactl("--config", str(write_config(tmp_path, [f"{LOOPBACK}:{port}"])), "status")
    assert (run.code, run.out) == (1, "")
    assert "status: the answer has an unexpected shape" in run.err
    assert "--json" in run.err


def test_runs_as_a_module() -> None:
    done = subprocess.run([sys.executable, "-m", "hacluster.mgmt.hactl", "vm-list", "x"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "hactl: vm-list: expected key=value, got 'x' " \
                          "(write key= for an empty value)\n"


def test_every_verb_has_a_handler_on_the_server() -> None:
    from hacluster.mgmt.service import Service
    from hacluster.mgmt.verbs import VERBS

    missing = [v for v in VERBS if not hasattr(Service, "_" + v.replace("-", "_"))]
    assert not missing, f"verbs without a handler: {missing}"


def test_a_storage_error_on_the_master_is_an_answer_not_a_dropped_connection(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool) -> None:
    with api_server(FailingHost(None), pool) as port:
        run = hactl("--config", str(write_config(tmp_path, [f"{LOOPBACK}:{port}"])),
                    "host-disable", "uuid=host-b")
    assert (run.code, run.out) == (1, "")
    assert "could not make the change durable ([Errno 5] Input/output error)" in run.err
    assert "read it back before retrying" in run.err


def test_role_secret_is_made_from_the_pool_secret_and_limits_the_caller(
        hactl: Callable[..., Run], tmp_path: Path, pool: Pool) -> None:
    config = write_config(tmp_path, [f"{LOOPBACK}:{closed_port()}"])
    made = hactl("--config", str(config), "role-secret", "read-only", "alice")
    assert made.code == 0 and made.out.startswith("read-only:alice:")
    (tmp_path / "alice.secret").write_text(made.out)
    host = FakeHost(VMS)
    with api_server(host, pool) as port:
        alice = write_config(tmp_path, [f"{LOOPBACK}:{port}"], secret_file="alice.secret")
        assert hactl("--config", str(alice), "vm-list").code == 0
        refused = hactl("--config", str(alice), "host-disable", "uuid=host-b")
    assert refused.code == 1
    assert "(secret:read-only:alice) is read-only; host-disable needs operator" in refused.err
    assert [call.verb for call in host.calls] == ["vm-list"]
    assert hactl("--config", str(config), "role-secret", "root", "alice").code == 2
    assert hactl("--config", str(config), "role-secret", "operator", "a b").code == 2


def test_help_shows_the_role_each_verb_needs(hactl: Callable[..., Run]) -> None:
    assert "  status" in hactl("help").out and " read-only " in hactl("help").out
    assert hactl("help", "host-emergency-ha-disable").out.rstrip().endswith(
        "needs: a credential of role emergency or higher")
