"""The hand-off between the chain's Ray Train workers and the driver, one task at a time.

One worker group trains the whole chain (a `TorchTrainer.fit()` costs ~20 s to start, so one per task
would dominate short tasks). After each task rank 0 posts the trained scholar here; the driver evaluates
and registers it, then releases the workers, who load it back from the registry for the next task.
A restarted worker group (after a worker died) asks where to resume: the first unregistered task; only
its rank 0 asks (`pipelines.worker`), and also learns the task's MLflow run, where it logs the losses.
The driver runs this class as an async Ray actor holding no CPU.
"""

from __future__ import annotations

import asyncio
from typing import Any


class TaskGate:
    def __init__(self, first_task: int):
        self._next = first_task  # first task not registered yet
        self._trained: dict[int, asyncio.Future] = {}
        self._registered: dict[int, asyncio.Future] = {}
        self._runs: dict[int, str] = {}  # task -> its MLflow run, opened by the driver before it is trained
        self._aborted = False

    def _future(self, table: dict[int, asyncio.Future], task: int) -> asyncio.Future:
        if task not in table:
            table[task] = asyncio.get_running_loop().create_future()
        return table[task]

    async def next_task(self) -> int:
        return self._next

    async def set_run(self, task: int, run_id: str) -> None:
        self._runs[task] = run_id

    async def task_run(self, task: int) -> str:
        return self._runs[task]

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
        for future in self._registered.values():
            if not future.done():
                future.set_result("")
