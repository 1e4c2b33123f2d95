"""dgr.replay: the loss mix, generative replay's targets and exact replay's draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dgr.replay import ExactReplay, GenerativeReplay, TargetKind, mix_losses
from dgr.scenario import Scenario
from dgr.scholar import Scholar, new_scholar
from dgr.streams import Task, TaskInfo
from dgr.targets import LabelledData
from tests.conftest import tiny_config

SHAPE = (1, 8, 8)
PAST = [TaskInfo(0, "a", (0, 1)), TaskInfo(1, "b", (2, 3))]
LATEST = TaskInfo(2, "c", (4, 5))
N = 12


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def previous_scholar(outputs: int = 6) -> Scholar:
    return new_scholar(tiny_config(), SHAPE, outputs).frozen_copy()


def test_mix_is_r_times_new_plus_one_minus_r_times_replay() -> None:
    new, replay = torch.tensor(2.0), torch.tensor(10.0)
    assert torch.allclose(mix_losses(new, replay, 0.25), torch.tensor(0.25 * 2.0 + 0.75 * 10.0))


def test_mix_without_replay_is_the_new_loss() -> None:
    new = torch.tensor(2.0)
    assert mix_losses(new, None, 0.5) is new


def test_mix_with_ratio_one_is_the_new_loss() -> None:
    new = torch.tensor(2.0)
    assert mix_losses(new, torch.tensor(float("nan")), 1.0) is new


def test_mix_keeps_gradients_of_both_losses() -> None:
    w = torch.tensor(1.0, requires_grad=True)
    mix_losses(3 * w, 5 * w, 0.5).backward()
    assert w.grad == pytest.approx(0.5 * 3 + 0.5 * 5)


@pytest.mark.parametrize("scenario, label_head, train_head", [
    (Scenario.CLASS, (0, 4), (0, 6)),  # labelled on the past classes, trained against the new ones too
    (Scenario.DOMAIN, (0, 2), (0, 2)),
])
def test_hard_targets_are_the_previous_solvers_argmax_in_the_past_head(
        scenario: Scenario, label_head: tuple[int, int], train_head: tuple[int, int]) -> None:
    previous = previous_scholar()
    x, targets = GenerativeReplay(previous, scenario, PAST, LATEST).draw(N, rng())
    a, b = label_head
    expected = previous.solver(x)[:, a:b].argmax(1) + a
    assert targets.rows is None  # one target per sample, in order
    assert torch.equal(targets.hard, expected)
    assert targets.heads.tolist() == [list(train_head)] * N


def test_soft_targets_are_the_previous_solvers_softened_probabilities() -> None:
    previous, temperature = previous_scholar(), 2.0
    replay = GenerativeReplay(previous, Scenario.CLASS, PAST, LATEST, TargetKind.SOFT, temperature)
    x, targets = replay.draw(N, rng())
    logits = previous.solver(x)
    assert targets.hard is None
    assert targets.heads.tolist() == [[0, 6]] * N
    assert torch.allclose(targets.soft[:, :4], F.softmax(logits[:, :4] / temperature, dim=1), atol=1e-6)
    assert torch.equal(targets.soft[:, 4:], torch.zeros(N, 2))


def test_task_incremental_replay_labels_every_sample_on_every_past_head() -> None:
    previous = previous_scholar()
    x, targets = GenerativeReplay(previous, Scenario.TASK, PAST, LATEST).draw(N, rng())
    logits = previous.solver(x)
    assert torch.equal(targets.rows, torch.arange(N).repeat(2))
    for block, (a, b) in enumerate([(0, 2), (2, 4)]):
        rows = slice(block * N, (block + 1) * N)
        assert targets.heads[rows].tolist() == [[a, b]] * N
        assert torch.equal(targets.hard[rows], logits[:, a:b].argmax(1) + a)


def test_generative_replay_samples_the_previous_generator() -> None:
    previous = previous_scholar()
    x, _ = GenerativeReplay(previous, Scenario.CLASS, PAST, LATEST).draw(N, rng(4))
    assert torch.equal(x, previous.sample(N, rng(4)))


def lookup(stored: LabelledData, x: torch.Tensor) -> list[int]:
    """Index of the stored image each drawn input is (exactly), -1 if none."""
    images = stored.x.float().div(255.0).flatten(1)  # (N, D)
    found = []
    for row in x.flatten(1):
        hits = (images == row).all(1).nonzero().flatten().tolist()
        found.append(hits[0] if hits else -1)
    return found


def test_exact_replay_draws_only_stored_data_with_true_labels(tiny_stream: list[Task]) -> None:
    stored = LabelledData.of(tiny_stream[:2])
    x, targets = ExactReplay(stored, Scenario.CLASS, LATEST).draw(40, rng())
    found = lookup(stored, x)
    assert -1 not in found
    assert targets.hard.tolist() == stored.y[found].tolist()
    assert targets.heads.tolist() == [[0, 6]] * 40  # stored classes compete with the new ones


def test_exact_replay_uses_task_heads_in_task_incremental(tiny_stream: list[Task]) -> None:
    stored = LabelledData.of(tiny_stream[:2])
    x, targets = ExactReplay(stored, Scenario.TASK, LATEST).draw(40, rng())
    y = stored.y[lookup(stored, x)]
    assert targets.hard.tolist() == y.tolist()
    assert targets.heads.tolist() == [[v - v % 2, v - v % 2 + 2] for v in y.tolist()]


def test_exact_replay_uses_the_position_in_the_task_in_domain_incremental(tiny_stream: list[Task]) -> None:
    stored = LabelledData.of(tiny_stream[:2])
    x, targets = ExactReplay(stored, Scenario.DOMAIN, LATEST).draw(40, rng())
    y = stored.y[lookup(stored, x)]
    assert targets.hard.tolist() == (y % 2).tolist()
    assert targets.heads.tolist() == [[0, 2]] * 40


def test_exact_replay_draws_from_every_stored_task(tiny_stream: list[Task]) -> None:
    stored = LabelledData.of(tiny_stream[:2])
    _, targets = ExactReplay(stored, Scenario.CLASS, LATEST).draw(200, rng())
    assert set(targets.hard.tolist()) == {0, 1, 2, 3}
