"""Test hooks that the chain's workers import by name (`pipelines.chain.WorkerHook`), and a gate that
answers like a driver registering a task between two ranks' questions. Never used outside tests."""

from __future__ import annotations

import os
from pathlib import Path

from dgr.training import Progress
from pipelines.gate import TaskGate


def die_once(rank: int, progress: Progress, task: int, iteration: int, marker: str) -> None:
    """Rank 1 dies at (task, iteration) the first time only: the retried worker group must get through."""
    if rank == 1 and (progress.task, progress.iteration) >= (task, iteration) and not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)


def record_task(rank: int, progress: Progress, folder: str) -> None:
    """Appends the task a rank has just trained to `folder`/rank-<rank>."""
    if progress.iteration == progress.iterations:
        with open(Path(folder) / f"rank-{rank}", "a") as record:
            record.write(f"{progress.task}\n")


class RaceGate(TaskGate):
    """The first question after a registration gets the next task, any later one the task after it: what
    a rank that asked a moment later could see while the driver registers."""

    def __init__(self, first_task: int):
        super().__init__(first_task)
        self._asked: set[int] = set()

    async def next_task(self) -> int:
        task = await super().next_task()
        if task in self._asked:
            return task + 1
        self._asked.add(task)
        return task
