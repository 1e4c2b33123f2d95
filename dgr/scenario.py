"""The three continual-learning scenarios of van de Ven & Tolias (2019) as output heads.

A head is a contiguous range of solver outputs (start, stop) that compete in a softmax.
- task-incremental: one head per task, chosen by the task identity (multi-headed).
- domain-incremental: one shared head of `num_classes` outputs; a label's position within its task.
- class-incremental: one head over every class seen so far; the task identity must be inferred.
"""

from __future__ import annotations

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


def replay_heads(scenario: Scenario, past: Sequence[TaskInfo]) -> list[Head]:
    """Heads a replayed sample (of unknown task) is labelled on: every past task's in task-IL."""
    if scenario is Scenario.TASK:
        return [(t.offset, t.stop) for t in past]
    return [head(scenario, past[-1], past[-1])]


def head_mask(heads: torch.Tensor, width: int) -> torch.Tensor:
    """(K, 2) long (start, stop) per row -> (K, width) bool mask of the competing outputs."""
    columns = torch.arange(width, device=heads.device)
    return (columns >= heads[:, :1]) & (columns < heads[:, 1:])
