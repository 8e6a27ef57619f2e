"""A host waiting to join (:mod:`hacluster.node.candidate`), in process, over real TLS.

The pool is what ``hacluster pool init`` and ``pool add-host`` write (hosts on
127.0.0.1-3, the new one on 127.0.0.4); the candidate serves its management
API on its own address and is called the way hactl calls it. The master is a
real API server with the pool's certificate whose ``pool-admit`` answer is
scripted, so every answer a master could give (and a few it never should) is
tried. A refusal must leave ``node.toml`` exactly as it was and the host
still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hacluster.deploy.addhost import AddHostRequest, add_host
from hacluster.deploy.init import init_pool
from hacluster.mgmt import api
from hacluster.mgmt.roles import Role, role_secret
from hacluster.mgmt.tls import CertFiles, client_context, server_context
from hacluster.mgmt.verbs import Call
from hacluster.model.address import ConfigError
from hacluster.node.candidate import JOINED, wait_to_join
from hacluster.node.config import Candidate, load, load_node

from ..deploy.conftest import request
from ..mgmt.test_hactl import FakeHost
from ..mgmt.test_mail import free_port

NEW = "127.0.0.4"
MEMBERS = [["127.0.0.1:7000"], ["127.0.0.2:7000"], ["127.0.0.3:7000"]]


@dataclass
class ScriptedMaster(FakeHost):
    """The master's API host: records what reaches it, answers pool-admit as told."""

    answer_with: dict[str, Any] = field(default_factory=dict)

    async def answer(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(call)
        yield self.answer_with


@dataclass
class Joining:
    """A pool, its new host waiting (served in this loop), and its scripted master."""

    directory: Path
    secret: bytes
    ca: Path
    mgmt_port: int
    master: ScriptedMaster
    master_port: int
    waiting: asyncio.Task[int]

    @property
    def node_toml(self) -> Path:
        return self.directory / "node.toml"

    async def call(self, verb: str, params: dict[str, str] | None = None,
                   role: Role = Role.OPERATOR) -> Any:
        secret = role_secret(self.secret, role, "olga").encode()
        return await api.call([(NEW, self.mgmt_port)], client_context(self.ca), secret,
                              Call(verb, params or {}))

    async def join(self) -> Any:
        return await self.call("pool-join", {"master-address": f"127.0.0.1:{self.master_port}"})

    def admitted(self, index: int = 3, **changes: Any) -> None:
        hosts = [*MEMBERS, [f"{NEW}:7000"]]
        result = {"uuid": "x", "index": index, "slots": 16, "generation": 7,
                  "members_version": 1, "hosts": hosts, **changes}
        self.master.answer_with = {"ok": True, "result": result}


@pytest.fixture
async def joining(tmp_path: Path) -> AsyncIterator[Joining]:
    mgmt_port = free_port()
    created = init_pool(request(tmp_path, mgmt_port=mgmt_port, agent_port=free_port()))
    added = add_host(AddHostRequest(created.out, f"{NEW}:7000", "newbie", 2048))
    candidate = load_node(added.directory / "node.toml")
    assert isinstance(candidate, Candidate)
    mgmt = candidate.config.mgmt
    assert mgmt is not None
    master = ScriptedMaster(None, answer_with={"ok": False, "error": "not scripted"})
    host0 = created.out / "hosts" / "host0"
    server = api.Server(master, mgmt.secret,
                        server_context(CertFiles(host0 / "host.pem", host0 / "host.key"),
                                       mgmt.ca), client_context(mgmt.ca))
    listener = await server.serve("127.0.0.1", 0)
    waiting = asyncio.create_task(wait_to_join(candidate))
    joining = Joining(added.directory, mgmt.secret, mgmt.ca, mgmt.port, master,
                      int(listener.sockets[0].getsockname()[1]), waiting)
    for _ in range(200):  # until the candidate serves: it refuses every other verb
        try:
            await joining.call("host-list")
        except api.ApiError as error:
            if "answers only pool-join" in str(error):
                break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the candidate did not start serving")
    try:
        yield joining
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        listener.close()


async def test_a_host_waiting_to_join_is_admitted_and_becomes_a_member(
        joining: Joining) -> None:
    joining.admitted()
    result = await joining.join()
    assert result["index"] == 3 and result["joined"] is True
    assert await asyncio.wait_for(joining.waiting, 5) == JOINED
    config = load(joining.node_toml)  # a member's node.toml now
    assert config.index == 3 and config.capacity == 16 and config.name == "newbie"
    assert [[str(a) for a in row] for row in config.hosts] == [*MEMBERS, [f"{NEW}:7000"]]
    [admit] = joining.master.calls
    assert admit.verb == "pool-admit"
    assert admit.params == {"address": f"{NEW}:7000", "name-label": "newbie",
                            "memory": "2048", "uuid": config.my_uuid}
    assert admit.caller is not None and admit.caller.name == "olga"  # the operator, relayed
    assert admit.caller.role is Role.OPERATOR


@pytest.mark.parametrize(("answer", "said"), [
    ({"ok": False, "error": "no free slot"}, "refused to admit this host: no free slot"),
    ({"ok": False, "error": "this host is not the master (any more); try again"},
     "is not the pool's master"),
    ({"ok": True, "result": "a string"}, "without a result"),
    ({"ok": True, "result": {"index": 3, "hosts": "all", "slots": 16}}, "malformed"),
    ({"ok": True, "result": {"index": 9, "hosts": [["127.0.0.4:7000"]], "slots": 16}},
     "malformed"),
])
async def test_a_refusal_or_a_bad_answer_changes_nothing(
        joining: Joining, answer: dict[str, Any], said: str) -> None:
    before = joining.node_toml.read_bytes()
    joining.master.answer_with = answer
    with pytest.raises(api.ApiError, match=said):
        await joining.join()
    assert joining.node_toml.read_bytes() == before and not joining.waiting.done()
    joining.admitted()  # it still waits, and can join
    assert (await joining.join())["index"] == 3


async def test_an_index_given_to_other_addresses_is_refused(joining: Joining) -> None:
    before = joining.node_toml.read_bytes()
    joining.admitted(index=2)  # row 2 is 127.0.0.3's
    with pytest.raises(api.ApiError, match="gave index 2 to"):
        await joining.join()
    assert joining.node_toml.read_bytes() == before and not joining.waiting.done()


async def test_an_unreachable_master_or_a_bad_address_changes_nothing(
        joining: Joining) -> None:
    before = joining.node_toml.read_bytes()
    with pytest.raises(api.ApiError, match="could not reach the master"):
        await joining.call("pool-join", {"master-address": f"127.0.0.1:{free_port()}"})
    with pytest.raises(api.ApiError, match="not an IPv4 or IPv6 address"):
        await joining.call("pool-join", {"master-address": "master.example"})
    assert joining.node_toml.read_bytes() == before and joining.master.calls == []


async def test_only_an_operator_may_make_it_join(joining: Joining) -> None:
    joining.admitted()
    with pytest.raises(api.ApiError, match="role"):
        await joining.call("pool-join", {"master-address": f"127.0.0.1:{joining.master_port}"},
                           Role.READ_ONLY)
    assert joining.master.calls == [] and not joining.waiting.done()


def test_a_candidates_node_toml_is_checked_like_a_members(tmp_path: Path) -> None:
    created = init_pool(request(tmp_path))
    added = add_host(AddHostRequest(created.out, f"{NEW}:7000", "newbie"))
    path = added.directory / "node.toml"
    text = path.read_text()
    with pytest.raises(ConfigError, match="has not joined a pool yet"):
        load(path)
    for bad, said in ((text + 'hosts = ["127.0.0.1:7000"]\n', "not the 'hosts'"),
                      (text.replace("memory = ", "memory = -"), "memory"),
                      (text.replace("timeout = ", "timeout = -"), "timeout"),
                      ("\n".join(line for line in text.splitlines()
                                 if not line.startswith("uuid")), "needs 'uuid'")):
        path.write_text(bad)
        with pytest.raises(ConfigError, match=said):
            load_node(path)
    member = created.host_dirs[0] / "node.toml"
    member.write_text(member.read_text() + "memory = 10\n")
    with pytest.raises(ConfigError, match="for a host waiting to join"):
        load_node(member)


def test_a_new_host_maps_the_pools_other_heartbeat_srs_before_and_after_joining(
        tmp_path: Path) -> None:
    created = init_pool(request(tmp_path))
    for host in created.host_dirs:
        with (host / "node.toml").open("a") as node:
            node.write('heartbeat_srs = { "sr-b" = "/dev/disk/by-id/wwn-b" }\n')
    added = add_host(AddHostRequest(created.out, f"{NEW}:7000", "newbie"))
    candidate = load_node(added.directory / "node.toml")
    assert isinstance(candidate, Candidate)
    assert candidate.config.sr_path("sr-b") == Path("/dev/disk/by-id/wwn-b")
    member = added.directory / "node.toml"
    member.write_text(candidate.joined(3, [*MEMBERS, [f"{NEW}:7000"]], 16))
    assert load(member).sr_path("sr-b") == Path("/dev/disk/by-id/wwn-b")


def test_add_host_refuses_with_nothing_written(tmp_path: Path) -> None:
    created = init_pool(request(tmp_path))
    hosts = created.out / "hosts"
    before = sorted(p.name for p in hosts.iterdir())
    for address, name, said in (("127.0.0.2:7000", "", "host host1 of the pool has it"),
                                (f"{NEW}:7000", "host0", "is taken"),
                                (f"{NEW}:7000", "../escape", "names the host's directory"),
                                ("127.0.0.5,127.0.0.6", "", "one host")):
        with pytest.raises(ConfigError, match=said):
            add_host(AddHostRequest(created.out, address, name))
    with pytest.raises(ConfigError, match="not a directory written by"):
        add_host(AddHostRequest(tmp_path, f"{NEW}:7000"))
    assert sorted(p.name for p in hosts.iterdir()) == before
