"""The node's task supervisor: no task is dropped, no unexpected end is silent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hacluster.node.tasks import Supervisor


class Recorder:
    def __init__(self) -> None:
        self.logged: list[tuple[str, dict[str, Any]]] = []
        self.exits: list[str] = []

    def log(self, event: str, sync: bool = False, **fields: Any) -> None:
        self.logged.append((event, fields))

    def supervisor(self) -> Supervisor:
        return Supervisor(self.log, self.exits.append)


async def fail() -> None:
    await asyncio.sleep(0)
    raise ValueError("broken")


async def forever() -> None:
    await asyncio.Event().wait()


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_a_failing_task_is_logged_and_only_a_critical_one_stops_the_node() -> None:
    seen = Recorder()
    tasks = seen.supervisor()
    tasks.spawn(fail(), "helper")
    tasks.spawn(fail(), "storage worker", critical=True)
    await settle()
    assert [(e, f["name"], f["critical"]) for e, f in seen.logged] == [
        ("task-failed", "helper", False), ("task-failed", "storage worker", True)]
    assert seen.logged[0][1]["error"] == "ValueError: broken"
    assert seen.exits == ["critical task storage worker ended: ValueError('broken')"]
    assert not tasks.tasks  # ended tasks are let go


@pytest.mark.asyncio
async def test_a_critical_task_that_returns_also_stops_the_node() -> None:
    seen = Recorder()
    seen.supervisor().spawn(asyncio.sleep(0), "master duties", critical=True)
    await settle()
    assert seen.exits == ["critical task master duties ended: it returned"]
    assert seen.logged == []


@pytest.mark.asyncio
async def test_cancelling_is_a_normal_end_and_cancel_all_reaches_every_task() -> None:
    seen = Recorder()
    tasks = seen.supervisor()
    held = [tasks.spawn(forever(), f"task {i}", critical=i == 0) for i in range(3)]
    await settle()
    assert set(tasks.tasks) == set(held)
    tasks.cancel_all()
    await settle()
    assert all(t.cancelled() for t in held)
    assert seen.exits == [] and seen.logged == [] and not tasks.tasks
