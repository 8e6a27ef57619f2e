"""Every task the daemon starts is held, and its unexpected end is never silent.

Rules:

* :meth:`Supervisor.spawn` starts a task and holds it until it ends; nothing
  runs as a ``create_task`` whose result nobody holds.
* A task that ends with an exception is logged (``task-failed``, with its
  name and the error). A **critical** task (one the node cannot do its job
  without: the storage worker, the master's duties) that ends at all, other
  than by being cancelled, also calls ``on_critical_exit``: the daemon fences
  rather than run on half-working.
* :meth:`Supervisor.cancel_all` cancels every task still running (the node is
  stopping).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol


class Log(Protocol):
    def __call__(self, event: str, sync: bool = False, **fields: Any) -> None: ...


class Supervisor:
    def __init__(self, log: Log, on_critical_exit: Callable[[str], None]) -> None:
        self.log = log
        self.on_critical_exit = on_critical_exit
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str,
              critical: bool = False) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(lambda done: self._ended(done, critical))
        return task

    def _ended(self, task: asyncio.Task[Any], critical: bool) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.log("task-failed", name=task.get_name(), critical=critical,
                     error=f"{type(error).__name__}: {error}")
        if critical:
            why = f"{error!r}" if error is not None else "it returned"
            self.on_critical_exit(f"critical task {task.get_name()} ended: {why}")

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
