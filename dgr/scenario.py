"""The three continual-learning scenarios of van de Ven & Tolias (2019) as output heads.

A head is a contiguous range of solver outputs (start, stop) that compete in a softmax.
- task-incremental: one head per task, chosen by the task identity (multi-headed).
- domain-incremental: one shared head of `num_classes` outputs; a label's position within its task.
- class-incremental: one head over every class seen so far; the task identity must be inferred.
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import Sequence

import torch

from dgr.streams import TaskInfo

Head = tuple[int, int]


class Scenario(Enum):
    TASK = "task"
    DOMAIN = "domain"
    CLASS = "class"


def output_size(scenario: Scenario, tasks: Sequence[TaskInfo]) -> int:
    if scenario is Scenario.DOMAIN:
        return max(t.num_classes for t in tasks)
    return max(t.stop for t in tasks)


def head(scenario: Scenario, task: TaskInfo, latest: TaskInfo) -> Head:
    """Outputs that compete when classifying `task`'s data once `latest` has been learned."""
    if scenario is Scenario.TASK:
        return task.offset, task.stop
    if scenario is Scenario.DOMAIN:
        return 0, task.num_classes
    return 0, latest.stop


def target(scenario: Scenario, labels: torch.Tensor, task: TaskInfo) -> torch.Tensor:
    """Output index each stream-wide label must win."""
    return labels - task.offset if scenario is Scenario.DOMAIN else labels


def replay_heads(scenario: Scenario, past: Sequence[TaskInfo], latest: TaskInfo) -> list[tuple[Head, Head]]:
    """(labelling head, training head) pairs for a replayed sample of unknown task while learning `latest`.

    The previous solver labels on the heads it knew; the new solver is trained on the heads that compete
    now. They differ in class-IL only: old classes must beat the new ones too, or replay cannot stop the
    new classes from taking over. Task-IL replays every sample on every past task's head.
    """
    if scenario is Scenario.TASK:
        return [((t.offset, t.stop), (t.offset, t.stop)) for t in past]
    return [(head(scenario, past[-1], past[-1]), head(scenario, past[-1], latest))]


def outside_heads(heads: torch.Tensor, width: int) -> torch.Tensor:
    """(K, 2) long (start, stop) per row -> (K, width) bool mask of the outputs that do not compete."""
    columns = _columns(width, heads.device)
    return (columns < heads[:, :1]) | (columns >= heads[:, 1:])


@functools.lru_cache(maxsize=32)
def _columns(width: int, device: torch.device) -> torch.Tensor:
    """0 .. width - 1 on `device`, made once: the loss asks for it at every step."""
    return torch.arange(width, device=device)
