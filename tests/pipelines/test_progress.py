"""The driver's progress display: time left from the tasks done so far; a bar only on a terminal."""

from __future__ import annotations

import io

import pytest

from pipelines import progress as progress_module
from pipelines.progress import ChainProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    return now


def test_plain_lines_without_a_terminal_and_the_time_left_from_tasks_done(clock: list[float]) -> None:
    out = io.StringIO()
    shown = ChainProgress("chain", num_tasks=5, first=1, stream=out)  # task 0 was registered before
    shown.task_done(1, task_seconds=30.0)  # the first task of this run: its own time, not the start-up
    clock[0] += 20.0
    shown.task_done(2, task_seconds=99.0)  # later: the mean time between registrations
    assert out.getvalue().splitlines() == ["chain: 2/5 tasks, about 1 min 30 s left",
                                           "chain: 3/5 tasks, about 40 s left"]


def test_a_bar_redrawn_in_place_on_a_terminal(clock: list[float]) -> None:
    out = Terminal()
    shown = ChainProgress("chain", num_tasks=2, first=0, stream=out)
    shown.task_done(0, task_seconds=10.0)
    clock[0] += 10.0
    shown.task_done(1, task_seconds=10.0)
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("chain: 2/2 tasks, about 0 s left\n")
    assert "[" + "#" * 15 + "." * 15 + "] chain: 1/2 tasks, about 10 s left" in text
