"""dgr.evaluation: the summaries of an accuracy matrix, and accuracy under each scenario's heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgr.evaluation import (Matrix, average_accuracy, backward_transfer, evaluate, forgetting, matrix_row,
                            mean_forgetting)
from dgr.scenario import Scenario
from dgr.streams import Task, TaskInfo
from dgr.targets import LabelledData

MATRIX: Matrix = [
    [0.9, None, None],
    [0.6, 0.8, None],
    [0.5, 0.7, 1.0],
]


def test_average_accuracy_is_the_mean_of_the_last_row() -> None:
    assert average_accuracy(MATRIX) == pytest.approx((0.5 + 0.7 + 1.0) / 3)


def test_forgetting_is_best_earlier_accuracy_minus_final() -> None:
    assert forgetting(MATRIX) == pytest.approx([0.9 - 0.5, 0.8 - 0.7])


def test_mean_forgetting_averages_the_earlier_tasks_and_is_zero_after_one_task() -> None:
    assert mean_forgetting(MATRIX) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert mean_forgetting(MATRIX[:1]) == 0.0


def test_forgetting_uses_the_best_not_the_first_accuracy() -> None:
    matrix: Matrix = [[0.5, None, None], [0.9, 0.8, None], [0.4, 0.8, 1.0]]
    assert forgetting(matrix) == pytest.approx([0.9 - 0.4, 0.0])


def test_backward_transfer_is_final_minus_just_learned() -> None:
    assert backward_transfer(MATRIX) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)


def test_single_task_has_no_forgetting_or_transfer() -> None:
    assert forgetting([[0.7]]) == [] and backward_transfer([[0.7]]) == 0.0
    assert average_accuracy([[0.7]]) == 0.7


def test_matrix_row_pads_unlearned_tasks_with_none() -> None:
    assert matrix_row([0.5, 0.25], 4) == [0.5, 0.25, None, None]


TASKS = [TaskInfo(0, "a", (0, 1)), TaskInfo(1, "b", (2, 3)), TaskInfo(2, "c", (4, 5))]


def task_test_sets(per_class: int = 5) -> list[LabelledData]:
    """Each task's test set; an image's first pixel stores its label, so a solver can read it off."""
    sets = []
    for info in TASKS:
        y = torch.tensor(info.classes).repeat_interleave(per_class)
        x = torch.zeros(len(y), 1, 4, 4, dtype=torch.uint8)
        x[:, 0, 0, 0] = y.to(torch.uint8)
        empty = torch.empty(0)
        sets.append(LabelledData.of([Task(info.index, info.name, info.classes, empty, empty, x, y)], "test"))
    return sets


class LabelReader(nn.Module):
    """One-hot logits of `mapping[label]` plus a large `distractor` output that no head should read."""

    def __init__(self, width: int, mapping: dict[int, int], distractor: int | None = None):
        super().__init__()
        self.width, self.mapping, self.distractor = width, mapping, distractor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = x[:, 0, 0, 0].mul(255).round().long()
        logits = F.one_hot(torch.tensor([self.mapping[int(v)] for v in labels]), self.width).float()
        if self.distractor is not None:
            logits[:, self.distractor] = 10.0
        return logits


IDENTITY = {v: v for v in range(6)}


def test_perfect_solver_scores_one_on_every_task() -> None:
    accuracies = evaluate(LabelReader(6, IDENTITY), task_test_sets(), Scenario.CLASS, TASKS[-1], batch_size=4)
    assert accuracies == [1.0, 1.0, 1.0]


def test_outputs_outside_the_class_head_are_ignored() -> None:
    solver = LabelReader(6, IDENTITY, distractor=5)  # class 5 is not yet learned after task 1
    assert evaluate(solver, task_test_sets()[:2], Scenario.CLASS, TASKS[1]) == [1.0, 1.0]


def test_class_head_covers_every_learned_class() -> None:
    solver = LabelReader(6, IDENTITY, distractor=5)  # after task 2 class 5 competes with all the others
    assert evaluate(solver, task_test_sets(), Scenario.CLASS, TASKS[2]) == [0.0, 0.0, 0.5]


def test_task_heads_ignore_other_tasks_outputs() -> None:
    solver = LabelReader(6, IDENTITY, distractor=5)
    assert evaluate(solver, task_test_sets(), Scenario.TASK, TASKS[2]) == [1.0, 1.0, 0.5]


def test_domain_head_scores_the_position_within_the_task() -> None:
    solver = LabelReader(2, {v: v % 2 for v in range(6)})
    assert evaluate(solver, task_test_sets(), Scenario.DOMAIN, TASKS[2]) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_restores_the_solvers_mode(training: bool) -> None:
    solver = LabelReader(6, IDENTITY)
    solver.train(training)
    evaluate(solver, task_test_sets(), Scenario.CLASS, TASKS[-1])
    assert solver.training is training
