"""The driver's progress display: time left from the tasks done so far; a bar only on a terminal."""

from __future__ import annotations

import io
import sys

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


def screen_lines(text: str) -> list[str]:
    """What a terminal shows for `text`: \\r goes back to the line's start, ESC[K clears the rest of it."""
    lines, line, column = [], "", 0
    i = 0
    while i < len(text):
        if text.startswith(progress_module.CLEAR_LINE, i):
            line, column, i = "", 0, i + len(progress_module.CLEAR_LINE)
            continue
        char = text[i]
        if char == "\n":
            lines.append(line)
            line, column = "", 0
        elif char == "\r":
            column = 0
        else:
            line = line[:column] + char + line[column + 1:]
            column += 1
        i += 1
    return lines + [line] if line else lines


def test_on_a_terminal_other_lines_go_above_the_bar(clock: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    out = Terminal()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", out)  # one terminal, as both streams are on a console
    shown = ChainProgress("chain", num_tasks=2, first=0)
    with shown.shown():
        print("task 0 registered")
        shown.task_done(0, task_seconds=10.0)
        print("(worker) task 1 iteration 100", flush=True)  # Ray's log thread prints like this
        sys.stderr.write("(worker) a warning\n")
        clock[0] += 10.0
        print("task 1 registered")
        shown.task_done(1, task_seconds=10.0)
    print("accuracy matrix")
    bar = "[" + "#" * 15 + "." * 15 + "] chain: 1/2 tasks, about 10 s left"
    assert screen_lines(out.getvalue()) == [
        "task 0 registered", "(worker) task 1 iteration 100", "(worker) a warning", "task 1 registered",
        "[" + "#" * 30 + "] chain: 2/2 tasks, about 0 s left", "accuracy matrix"]
    assert bar in out.getvalue()  # drawn below each line written while it showed


def test_a_chain_stopped_early_leaves_the_bar_on_its_own_line(
        clock: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    out = Terminal()
    monkeypatch.setattr("sys.stdout", out)
    shown = ChainProgress("chain", num_tasks=3, first=0)
    with pytest.raises(KeyboardInterrupt), shown.shown():
        shown.task_done(0, task_seconds=10.0)
        raise KeyboardInterrupt
    print("error: interrupted")
    assert screen_lines(out.getvalue())[-1] == "error: interrupted"
    assert screen_lines(out.getvalue())[0].startswith("[" + "#" * 10 + "." * 20 + "] chain: 1/3 tasks")
    assert sys.stdout is out  # the streams are the caller's again
