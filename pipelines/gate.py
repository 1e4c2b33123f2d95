"""The hand-off between the chain's Ray Train workers and the driver, one task at a time.

One worker group trains the whole chain (a `TorchTrainer.fit()` costs ~20 s to start, so one per task
would dominate short tasks). After each task rank 0 posts the trained scholar here; the driver evaluates
and registers it. In the main job the workers meanwhile train the next task from the scholar they hold
(the one just posted), so they never wait for the registry; they stay at most one task ahead of it. In a
sweep trial they wait for each registration, because the trial's scheduler may stop the chain there.
A worker group (a new one, or one restarted after a worker died) asks where to start: the first
unregistered task, once no posted task is still being registered; it loads the previous scholar from the
registry. Only rank 0 asks (`pipelines.worker`), and it also learns each task's MLflow run, where it logs
the losses. The driver runs this class as an async Ray actor holding no CPU.
"""

from __future__ import annotations

import asyncio
from typing import Any


class TaskGate:
    def __init__(self, first_task: int):
        self._next = first_task  # first task not registered yet
        self._trained: dict[int, asyncio.Future] = {}
        self._registered: dict[int, asyncio.Future] = {}
        self._runs: dict[int, asyncio.Future] = {}  # task -> its MLflow run, opened by the driver
        self._aborted = False

    def _future(self, table: dict[int, asyncio.Future], task: int) -> asyncio.Future:
        if task not in table:
            table[task] = asyncio.get_running_loop().create_future()
        return table[task]

    async def next_task(self) -> int | None:
        """Where a worker group starts: the first unregistered task (after waiting out the registration of
        a task posted by the group before it), or None once the driver gave up on the chain."""
        while not self._aborted and self._posted(self._next):  # being registered
            await self._future(self._registered, self._next)
        return None if self._aborted else self._next

    def _posted(self, task: int) -> bool:
        return task in self._trained and self._trained[task].done()

    async def set_run(self, task: int, run_id: str) -> None:
        self._future(self._runs, task).set_result(run_id)

    async def task_run(self, task: int) -> str:
        """The task's MLflow run, once the driver has opened it; "" once the driver gave up."""
        if self._aborted:
            return ""
        return await self._future(self._runs, task)

    async def trained(self, task: int, payload: dict[str, Any]) -> None:
        future = self._future(self._trained, task)
        if future.done():  # a retried worker group trained the task again: keep the newest
            self._trained[task] = future = asyncio.get_running_loop().create_future()
        future.set_result(payload)

    async def wait_trained(self, task: int, timeout: float) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(asyncio.shield(self._future(self._trained, task)), timeout)
        except asyncio.TimeoutError:
            return None

    async def registered(self, task: int, version: str) -> None:
        self._next = task + 1
        self._future(self._registered, task).set_result(version)

    async def wait_registered(self, task: int) -> str:
        """The version registered for `task`, or "" once the driver gave up on the chain."""
        if self._aborted:  # a worker that asks after the abort must not wait forever
            return ""
        return await self._future(self._registered, task)

    async def abort(self) -> None:
        self._aborted = True
        for table in (self._registered, self._runs):
            for future in table.values():
                if not future.done():
                    future.set_result("")
