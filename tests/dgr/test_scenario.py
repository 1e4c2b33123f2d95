"""dgr.scenario and the loss/prediction of dgr.targets: heads, targets and outputs per scenario."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dgr.scenario import Scenario, head, output_size, replay_heads, target
from dgr.streams import TaskInfo
from dgr.targets import Targets, predictions, solver_loss

TASKS = [TaskInfo(0, "a", (0, 1)), TaskInfo(1, "b", (2, 3)), TaskInfo(2, "c", (4, 5))]
FIRST, SECOND, LATEST = TASKS


@pytest.mark.parametrize("task, expected", [(FIRST, (0, 2)), (SECOND, (2, 4)), (LATEST, (4, 6))])
def test_task_incremental_head_is_the_tasks_own_columns(task: TaskInfo, expected: tuple[int, int]) -> None:
    assert head(Scenario.TASK, task, LATEST) == expected


@pytest.mark.parametrize("task", TASKS)
def test_domain_incremental_head_is_shared(task: TaskInfo) -> None:
    assert head(Scenario.DOMAIN, task, LATEST) == (0, 2)


@pytest.mark.parametrize("latest, stop", [(FIRST, 2), (SECOND, 4), (LATEST, 6)])
def test_class_incremental_head_covers_every_class_seen(latest: TaskInfo, stop: int) -> None:
    assert head(Scenario.CLASS, FIRST, latest) == (0, stop)


def test_domain_target_subtracts_the_task_offset() -> None:
    assert target(Scenario.DOMAIN, torch.tensor([4, 5, 4]), LATEST).tolist() == [0, 1, 0]


@pytest.mark.parametrize("scenario", [Scenario.TASK, Scenario.CLASS])
def test_task_and_class_targets_keep_the_label(scenario: Scenario) -> None:
    assert target(scenario, torch.tensor([4, 5, 4]), LATEST).tolist() == [4, 5, 4]


def test_task_incremental_replays_on_one_head_per_past_task() -> None:
    assert replay_heads(Scenario.TASK, [FIRST, SECOND], LATEST) == [((0, 2), (0, 2)), ((2, 4), (2, 4))]


def test_domain_incremental_replays_on_the_shared_head() -> None:
    assert replay_heads(Scenario.DOMAIN, [FIRST, SECOND], LATEST) == [((0, 2), (0, 2))]


def test_class_incremental_labels_on_past_classes_and_trains_against_the_new_ones() -> None:
    assert replay_heads(Scenario.CLASS, [FIRST, SECOND], LATEST) == [((0, 4), (0, 6))]


@pytest.mark.parametrize("scenario, size", [(Scenario.TASK, 6), (Scenario.DOMAIN, 2), (Scenario.CLASS, 6)])
def test_output_size(scenario: Scenario, size: int) -> None:
    assert output_size(scenario, TASKS) == size


def mixed_heads() -> torch.Tensor:
    return torch.tensor([[0, 2], [2, 4], [4, 6], [0, 6], [2, 4]])  # (K, 2)


def test_hard_loss_is_cross_entropy_on_the_head_slice() -> None:
    torch.manual_seed(0)
    logits, heads = torch.randn(5, 6), mixed_heads()
    hard = torch.tensor([1, 3, 4, 5, 2])
    expected = torch.stack([F.cross_entropy(logits[i:i + 1, a:b], hard[i:i + 1] - a)
                            for i, (a, b) in enumerate(heads.tolist())]).mean()
    loss = solver_loss(logits, Targets(torch.arange(5), heads, hard=hard))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_loss_reads_the_logits_of_the_target_rows() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 6)
    rows, heads, hard = torch.tensor([2, 2, 0]), torch.tensor([[0, 2], [2, 4], [4, 6]]), torch.tensor([0, 3, 5])
    expected = (F.cross_entropy(logits[2:3, 0:2], hard[0:1]) + F.cross_entropy(logits[2:3, 2:4], hard[1:2] - 2)
                + F.cross_entropy(logits[0:1, 4:6], hard[2:3] - 4)) / 3
    assert torch.allclose(solver_loss(logits, Targets(rows, heads, hard=hard)), expected, atol=1e-6)


def test_soft_loss_is_distillation_on_the_head_slice() -> None:
    torch.manual_seed(2)
    logits, heads, temperature = torch.randn(5, 6), mixed_heads(), 2.0
    soft = torch.zeros(5, 6)
    for i, (a, b) in enumerate(heads.tolist()):
        soft[i, a:b] = torch.softmax(torch.randn(b - a), dim=0)
    per_row = [-(soft[i, a:b] * F.log_softmax(logits[i, a:b] / temperature, dim=0)).sum()
               for i, (a, b) in enumerate(heads.tolist())]
    expected = temperature**2 * torch.stack(per_row).mean()
    loss = solver_loss(logits, Targets(torch.arange(5), heads, soft=soft), temperature)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_predictions_never_leave_the_head() -> None:
    torch.manual_seed(3)
    heads = mixed_heads().repeat(40, 1)  # (200, 2)
    logits = torch.randn(len(heads), 6) * 10
    chosen = predictions(logits, heads)
    assert ((chosen >= heads[:, 0]) & (chosen < heads[:, 1])).all()
    expected = [int(logits[i, a:b].argmax()) + a for i, (a, b) in enumerate(heads.tolist())]
    assert chosen.tolist() == expected


def test_predictions_ignore_a_large_logit_outside_the_head() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0, 100.0]])
    assert predictions(logits, torch.tensor([[0, 2]])).tolist() == [1]
