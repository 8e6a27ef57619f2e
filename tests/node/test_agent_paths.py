"""Which of a host's networks the master calls its agent on first: where its heartbeats
come in, else the one that answered last (real RPC on two loopback addresses)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from hacluster.node.master import Agents
from hacluster.node.networks import HEARD_WITHIN, heard_best
from hacluster.wire import rpc
from hacluster.wire.codec import new_pool_key
from hacluster.wire.keys import KeyRing
from hacluster.wire.rpc import RpcStats

from ..conftest import BlackHole

KEY = new_pool_key()
CUT, UP = "127.0.0.1", "127.0.0.2"  # network 0 swallows everything, network 1 works


@pytest.mark.parametrize(("beats", "best"), [
    ([None, None], None),  # never heard: no preference
    ([10.0, 10.01], 0),  # both networks carry its beats: the first
    ([7.0, 10.0], 1),  # network 0 fell silent two intervals ago
    ([10.0 - HEARD_WITHIN, 10.0], 0),  # just within: still the first
    ([None, 10.0], 1),
    ([10.0, None], 0),
])
def test_heard_best(beats: list[float | None], best: int | None) -> None:
    assert heard_best(beats, interval=1.0) == best


async def echo(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "echo": request}


async def test_the_first_call_goes_where_the_heartbeats_come_in() -> None:
    hole = BlackHole()
    cut = await hole.listen(CUT)
    up = await rpc.serve(UP, 0, lambda: KeyRing(KEY), echo, RpcStats(),
                         target=rpc.target("host-b"))
    endpoints = [(CUT, BlackHole.port(cut)),
                 (UP, int(up.sockets[0].getsockname()[1]))]

    def agents(heard_on: Callable[[str], str]) -> Agents:
        return Agents({"host-b": list(endpoints)}, lambda: KeyRing(KEY), heard_on)

    async with cut, up:
        heard = agents(lambda host: UP)  # its beats come in on network 1 only
        assert (await heard.call("host-b", {"op": "x"}, 5))["ok"]
        assert hole.accepted == 0, "the first call still tried the silent network"
        unheard = agents(lambda host: "")  # nothing heard: in order, then remembered
        for _ in range(3):
            assert (await unheard.call("host-b", {"op": "x"}, 5))["ok"]
            await asyncio.sleep(0)
        assert hole.accepted == 1
