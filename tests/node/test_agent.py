"""The host agent end to end: real RPC on loopback, real guest processes on real disks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hacluster.node.agent import Agent
from hacluster.vm.driver import ExitKind, ProcessDriver, SimDriver
from hacluster.vm.guest import crash_file, halt_file
from hacluster.vm.records import read_records
from hacluster.wire.codec import new_pool_key
from hacluster.wire.rpc import call, target

from ..guests import guest, written

KEY = new_pool_key()
HOST = "127.0.0.1"
TARGET = target("host-a")


class Remote:
    """The master's side: calls to one agent over the network."""

    def __init__(self, agent: Agent, port: int) -> None:
        self.agent = agent
        self.port = port
        self.seen = 0

    async def __call__(self, **request: Any) -> dict[str, Any]:
        return await call(HOST, self.port, KEY, request, timeout=10, target=TARGET)

    async def new_exits(self) -> list[dict[str, Any]]:
        listed = await self(op="list", since=self.seen)
        self.seen = listed["last_seq"]
        exits: list[dict[str, Any]] = listed["exits"]
        return exits

    async def wait_exit(self, vm: str) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for found in await self.new_exits():
                assert found["vm"] == vm, f"unexpected exit {found}"
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"no exit of {vm} listed")


async def remote_for(agent: Agent) -> AsyncIterator[Remote]:
    server = await agent.serve(HOST, 0, KEY, TARGET)
    yield Remote(agent, server.sockets[0].getsockname()[1])
    agent.driver.kill_all()
    deadline = time.monotonic() + 10
    while agent.driver.running() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    server.close()
    await server.wait_closed()


@pytest.fixture
async def remote() -> AsyncIterator[Remote]:
    async for made in remote_for(Agent(ProcessDriver())):
        yield made


@pytest.fixture
async def sim_remote() -> AsyncIterator[Remote]:
    async for made in remote_for(Agent(SimDriver(memory=1024))):
        yield made


async def test_guest_lifecycle_through_the_agent(remote: Remote, tmp_path: Path) -> None:
    disks = {vm: tmp_path / f"{vm}.disk" for vm in ("a", "b", "c")}
    pids = {}
    for vm, disk in disks.items():
        started = await remote(op="start", vm=vm, command=guest(disk, vm),
                               env={"HACLUSTER_TEST": "1"})
        assert started["ok"] is True
        pids[vm] = started["pid"]
    listed = await remote(op="list", since=0)
    assert listed == {"ok": True, "running": pids, "exits": [], "last_seq": 0}

    halt_file(disks["a"]).touch()
    halted = await remote.wait_exit("a")
    assert (halted["kind"], halted["returncode"]) == (ExitKind.INTERNAL_SHUTDOWN.value, 0)
    assert read_records(disks["a"])[-1].event == "halt"

    crash_file(disks["b"]).touch()
    crashed = await remote.wait_exit("b")
    assert crashed["kind"] == ExitKind.CRASH.value and crashed["returncode"] != 0

    assert await remote(op="stop", vm="c") == {"ok": True, "kind": ExitKind.STOPPED.value,
                                                "returncode": 0}
    stopped = await remote.wait_exit("c")
    assert stopped["kind"] == ExitKind.STOPPED.value
    assert read_records(disks["c"])[-1].event == "stop"

    listed = await remote(op="list", since=0)
    assert listed["running"] == {} and listed["last_seq"] == 3
    assert [(e["seq"], e["vm"]) for e in listed["exits"]] == [(1, "a"), (2, "b"), (3, "c")]
    assert (await remote(op="list", since=3))["exits"] == []


async def test_a_start_with_a_readiness_command_answers_once_it_passes(
        remote: Remote, tmp_path: Path) -> None:
    disk, flag = tmp_path / "r.disk", tmp_path / "up"
    took = time.monotonic()
    answer = await remote(op="start", vm="r", command=guest(disk, "r"), env={"UP": str(flag)},
                          ready_command=["sh", "-c", 'sleep 0.5; touch "$UP"; test -e "$UP"'])
    assert answer["ok"] is True, answer
    assert time.monotonic() - took >= 0.5 and flag.exists()


async def test_driver_refusals_are_answered(remote: Remote, tmp_path: Path) -> None:
    disk = tmp_path / "a.disk"
    assert (await remote(op="start", vm="a", command=guest(disk, "a")))["ok"] is True
    await written(disk)
    again = await remote(op="start", vm="a", command=guest(disk, "a"))
    assert again == {"ok": False, "error": "VM a is already running here"}
    refused = await remote(op="start", vm="a2", command=guest(disk, "a"))
    assert refused["ok"] is False and "status 3" in refused["error"]
    missing = await remote(op="stop", vm="nope")
    assert missing == {"ok": False, "error": "VM nope is not running here"}
    assert list((await remote(op="list", since=0))["running"]) == ["a"]


@pytest.mark.parametrize(("request_fields", "error"), [
    ({}, "missing field 'op'"),
    ({"op": 3}, "field 'op' must be a string, not int"),
    ({"op": "reboot"}, "unknown op 'reboot'"),
    ({"op": "list"}, "missing field 'since'"),
    ({"op": "list", "since": "0"}, "field 'since' must be an integer, not str"),
    ({"op": "list", "since": True}, "field 'since' must be an integer, not bool"),
    ({"op": "start", "command": ["true"]}, "missing field 'vm'"),
    ({"op": "start", "vm": "x"}, "missing field 'command'"),
    ({"op": "start", "vm": "x", "command": "sleep 9"}, "field 'command' must be a list"),
    ({"op": "start", "vm": "x", "command": ["sleep", 9]}, "'command' must hold only strings"),
    ({"op": "start", "vm": "x", "command": ["sleep", "9"], "env": ["A=1"]},
     "field 'env' must be a map"),
    ({"op": "start", "vm": "x", "command": ["sleep", "9"], "env": {"A": 1}},
     "'env' must hold only strings"),
    ({"op": "start", "vm": "x", "command": []}, "empty command"),
    ({"op": "start", "vm": "x", "command": ["sleep", "9"], "ready_command": "true"},
     "field 'ready_command' must be a list"),
    ({"op": "start", "vm": "x", "command": ["sleep", "9"], "ready_command": [0]},
     "'ready_command' must hold only strings"),
    ({"op": "start", "vm": "x", "command": ["sleep", "9"], "ready_command": []},
     "empty command"),
    ({"op": "stop"}, "missing field 'vm'"),
    ({"op": "stop", "vm": b"x"}, "field 'vm' must be a string, not bytes"),
])
async def test_malformed_requests_change_nothing(remote: Remote, request_fields: dict[str, Any],
                                                 error: str) -> None:
    answer = await remote(**request_fields)
    assert answer["ok"] is False and error in answer["error"]
    assert await remote(op="list", since=0) == {"ok": True, "running": {}, "exits": [],
                                                "last_seq": 0}
    assert remote.agent.stats.bad_requests == 0  # authentic, just wrong: answered


async def test_unauthenticated_requests_are_counted_by_the_agent(remote: Remote) -> None:
    with pytest.raises(Exception, match="pool key"):
        await call(HOST, remote.port, new_pool_key(), {"op": "list", "since": 0}, timeout=5,
                   target=TARGET)
    assert remote.agent.stats.bad_requests == 1


async def test_sim_driver_behind_the_agent(sim_remote: Remote) -> None:
    assert (await sim_remote(op="start", vm="a", memory=768))["ok"] is True
    full = await sim_remote(op="start", vm="b", memory=512)
    assert full["ok"] is False and "needs 512 MiB" in full["error"]
    assert (await sim_remote(op="start", vm="b", command=["x"]))["error"] == (
        "missing field 'memory'")
    assert (await sim_remote(op="stop", vm="a"))["kind"] == ExitKind.STOPPED.value
    assert (await sim_remote(op="start", vm="b", memory=1024))["ok"] is True
    listed = await sim_remote(op="list", since=0)
    assert list(listed["running"]) == ["b"]
    assert [(e["vm"], e["kind"]) for e in listed["exits"]] == [("a", "stopped")]
