"""The driver's progress display for a chain: tasks done and the time left, after every registered task.

A bar redrawn in place where a terminal is attached; plain lines otherwise (logs, `ray job submit`).
On a terminal the bar stays the last line: while the chain trains (`ChainProgress.shown`), every other
line written to stdout or stderr (the driver's own, and the workers' lines that Ray prints in a thread
of the driver) goes above it, and the bar is drawn again below.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Iterator, TextIO

BAR_WIDTH = 30
CLEAR_LINE = "\r\x1b[K"


class ChainProgress:
    def __init__(self, chain: str, num_tasks: int, first: int, stream: TextIO | None = None):
        self.chain, self.num_tasks, self.first = chain, num_tasks, first
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.first_done: float | None = None
        self._screen: _BarBelow | None = None

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
        if not self.tty:
            print(text, file=self.stream, flush=True)
            return
        filled = BAR_WIDTH * (task + 1) // self.num_tasks
        bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {text}"
        if self._screen is not None:
            self._screen.draw(bar, last=task + 1 == self.num_tasks)
        else:
            self.stream.write(f"{CLEAR_LINE}{bar}{'' if task + 1 < self.num_tasks else chr(10)}")
            self.stream.flush()

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        """While the chain trains: on a terminal, stdout and stderr write above the bar."""
        if not self.tty or threading.current_thread() is not threading.main_thread():
            yield
            return
        screen = _BarBelow(self.stream)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = screen.writer(sys.stdout), screen.writer(sys.stderr)
        self._screen = screen
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
            self._screen = None
            screen.close()


class _BarBelow:
    """One terminal line kept last: a write that ends a line first clears the bar, then draws it again."""

    def __init__(self, terminal: TextIO):
        self.terminal = terminal
        self.bar = ""
        self.visible = False  # the bar is drawn on the terminal's current line
        self.lock = threading.RLock()  # the driver's thread and Ray's log thread both write

    def writer(self, stream: TextIO) -> "_Writer":
        return _Writer(self, stream)

    def write(self, stream: TextIO, text: str) -> int:
        with self.lock:
            if self.visible and text:
                self._clear()
            written = stream.write(text)
            stream.flush()
            if text.endswith("\n"):
                self._redraw()
            return written

    def draw(self, bar: str, last: bool) -> None:
        with self.lock:
            self.bar = bar
            if self.visible:
                self._clear()
            self._redraw()
            if last:  # the chain's end: the bar stays as a line of its own
                self.terminal.write("\n")
                self.terminal.flush()
                self.bar, self.visible = "", False

    def close(self) -> None:
        with self.lock:
            if self.visible:  # stopped early: what follows (an error) starts on a line of its own
                self.terminal.write("\n")
                self.terminal.flush()
            self.bar, self.visible = "", False

    def _clear(self) -> None:
        self.terminal.write(CLEAR_LINE)
        self.terminal.flush()
        self.visible = False

    def _redraw(self) -> None:
        if self.bar:
            self.terminal.write(f"{CLEAR_LINE}{self.bar}")
            self.terminal.flush()
            self.visible = True


class _Writer:
    """sys.stdout or sys.stderr while the bar is shown: writes go through `_BarBelow`, the rest is the stream's."""

    def __init__(self, screen: _BarBelow, stream: TextIO):
        self._screen, self._stream = screen, stream

    def write(self, text: str) -> int:
        return self._screen.write(self._stream, text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
