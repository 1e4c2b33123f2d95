"""Accuracy matrix and the summaries the continual-learning literature reports from it.

Row i holds test accuracies after learning task i; column j is task j. Entries for tasks not yet
learned (j > i) are None.
"""

from __future__ import annotations

from typing import Sequence

import torch

from dgr.scenario import Scenario
from dgr.streams import TaskInfo
from dgr.targets import LabelledData, predictions

Matrix = list[list[float | None]]


@torch.no_grad()
def evaluate(solver: torch.nn.Module, test_sets: Sequence[LabelledData], scenario: Scenario,
             latest: TaskInfo, batch_size: int = 1000, device: torch.device | str = "cpu") -> list[float]:
    """Accuracy on each test set with the heads that apply once `latest` has been learned."""
    was_training = solver.training
    solver.eval()
    accuracies = []
    for data in test_sets:
        data = data.to(device)
        labeller = data.labeller(scenario, latest)
        correct = torch.zeros((), dtype=torch.long, device=device)  # read once per test set: one sync
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)), device=device)
            targets = labeller.targets(data.y[index], data.task_ids[index])
            logits = solver(data.inputs(index))
            correct += (predictions(logits, targets.heads) == targets.hard).sum()
        accuracies.append(int(correct) / max(len(data), 1))
    solver.train(was_training)
    return accuracies


def matrix_row(accuracies: Sequence[float], num_tasks: int) -> list[float | None]:
    return list(accuracies) + [None] * (num_tasks - len(accuracies))


def average_accuracy(matrix: Matrix) -> float:
    """Mean accuracy over all tasks after the last one."""
    final = [a for a in matrix[-1] if a is not None]
    return sum(final) / len(final)


def forgetting(matrix: Matrix) -> list[float]:
    """Per earlier task j: best accuracy it ever had before the end minus its final accuracy."""
    last = len(matrix) - 1
    return [max(matrix[i][j] for i in range(j, last)) - matrix[last][j] for j in range(last)]


def mean_forgetting(matrix: Matrix) -> float:
    """Mean of `forgetting` over the earlier tasks; 0 after the first task."""
    per_task = forgetting(matrix)
    return sum(per_task) / len(per_task) if per_task else 0.0


def backward_transfer(matrix: Matrix) -> float:
    """Mean over earlier tasks of final accuracy minus accuracy just after learning it (Lopez-Paz 2017)."""
    last = len(matrix) - 1
    if last == 0:
        return 0.0
    return sum(matrix[last][j] - matrix[j][j] for j in range(last)) / last
