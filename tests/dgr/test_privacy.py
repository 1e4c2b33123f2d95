"""Generative replay keeps no past real training data; exact replay and joint training do.

Tasks come from a lazy generator, and the test keeps only weak references to their training images,
so whatever keeps an image alive during a later task is held by `run_sequence` itself.
"""

from __future__ import annotations

import collections
import gc
import weakref
from typing import Iterator

import pytest
import torch

from dgr.sequence import TaskEvaluated, run_sequence
from dgr.streams import Task
from dgr.training import Progress
from tests.conftest import make_tiny_stream, tiny_config

NUM_TASKS = 3
OUTPUTS = 2 * NUM_TASKS


def lazy_tasks(refs: list[weakref.ref[torch.Tensor]]) -> Iterator[Task]:
    """Builds each task only when asked; its images are referenced by nothing but the Task."""
    for k in range(NUM_TASKS):
        task = make_tiny_stream(NUM_TASKS)[k]
        refs.append(weakref.ref(task.train_x))
        yield task


def alive_during_training(arm: str) -> dict[int, list[bool]]:
    """For the progress of each task t > 0: whether each earlier task's training images are alive."""
    refs: list[weakref.ref[torch.Tensor]] = []
    alive: dict[int, list[bool]] = {}

    def check(event: Progress | TaskEvaluated) -> None:
        if isinstance(event, Progress) and event.task > 0:
            gc.collect()
            alive[event.task] = [ref() is not None for ref in refs[:event.task]]

    run_sequence(tiny_config(replay={"arm": arm}), lazy_tasks(refs), outputs=OUTPUTS, num_tasks=NUM_TASKS,
                 callback=check)
    return alive


@pytest.mark.parametrize("arm", ["gr", "none"])
def test_generative_replay_and_fine_tuning_drop_past_training_data(arm: str) -> None:
    assert alive_during_training(arm) == {1: [False], 2: [False, False]}


@pytest.mark.parametrize("arm", ["er", "joint"])
def test_exact_replay_and_joint_training_keep_past_training_data(arm: str) -> None:
    # While task 1 trains, the stored data is task 0's own tensor; later tasks store a concatenated copy,
    # which a weak reference to the original cannot follow, so the check is made during task 1.
    assert alive_during_training(arm)[1] == [True]


def test_the_lazy_stream_itself_keeps_no_task_alive() -> None:
    refs: list[weakref.ref[torch.Tensor]] = []
    collections.deque(lazy_tasks(refs), maxlen=0)  # consume, keeping nothing
    gc.collect()
    assert [ref() is None for ref in refs] == [True] * NUM_TASKS
