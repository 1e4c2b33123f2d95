"""The driver's progress display for a chain: tasks done and the time left, after every registered task.

A bar redrawn in place where a terminal is attached; plain lines otherwise (logs, `ray job submit`).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30


class ChainProgress:
    def __init__(self, chain: str, num_tasks: int, first: int, stream: TextIO | None = None):
        self.chain, self.num_tasks, self.first = chain, num_tasks, first
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.first_done: float | None = None

    def seconds_left(self, task: int, first_task_seconds: float) -> float:
        """From the tasks done so far: the mean time between registrations, which leaves out the worker
        group's start-up; after the first task, that task's own training and registration time."""
        now, done, left = time.perf_counter(), task + 1 - self.first, self.num_tasks - task - 1
        if self.first_done is None:
            self.first_done = now
        per_task = (now - self.first_done) / (done - 1) if done > 1 else first_task_seconds
        return per_task * left

    def task_done(self, task: int, task_seconds: float) -> None:
        """`task` is registered; `task_seconds` is what it took (training and registration)."""
        left = self.seconds_left(task, task_seconds)
        text = f"{self.chain}: {task + 1}/{self.num_tasks} tasks, about {_duration(left)} left"
        if self.tty:
            filled = BAR_WIDTH * (task + 1) // self.num_tasks
            end = "\n" if task + 1 == self.num_tasks else ""
            self.stream.write(f"\r\x1b[K[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {text}{end}")
            self.stream.flush()
        else:
            print(text, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
