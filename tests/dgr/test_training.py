"""dgr.training and dgr.sequence: the frozen previous scholar, r = 1, determinism, callbacks, sharding,
and every arm in every scenario on the tiny stream."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from dgr.config import Config
from dgr.evaluation import Matrix
from dgr.scholar import Scholar, new_scholar
from dgr.sequence import TaskEvaluated, replay_source, run_sequence
from dgr.streams import Task, TaskInfo
from dgr.targets import LabelledData, Targets
from dgr.training import Diverged, Progress, task_rng, train_task
from tests.conftest import tiny_config

OUTPUTS = 6  # class-IL over the 3 tiny tasks


class CountingReplay:
    """Passes draws through and counts them, to prove replay took part in training."""

    def __init__(self, source: Any):
        self.source, self.draws = source, 0

    def draw(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, Targets]:
        self.draws += 1
        return self.source.draw(n, rng)


class Recorder(nn.Module):
    """A `wrap` for train_task: remembers the module it wraps and every input batch it sees."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.inputs: list[torch.Tensor] = []

    def forward(self, *args: torch.Tensor) -> Any:
        self.inputs.append(args[0].detach().clone())
        return self.module(*args)


def trained_on_first_task(config: Config, stream: list[Task]) -> Scholar:
    scholar = new_scholar(config, stream[0].input_shape, OUTPUTS)
    train_task(scholar, LabelledData.of([stream[0]]), stream[0].info, config)
    return scholar


def second_task_with_gr(config: Config, stream: list[Task], scholar: Scholar, previous: Scholar,
                        **kwargs: Any) -> CountingReplay:
    first, second = stream[:2]
    replay = CountingReplay(replay_source(config, previous, [first.info], second.info, None))
    train_task(scholar, LabelledData.of([second]), second.info, config, replay, **kwargs)
    return replay


def test_frozen_previous_scholar_is_bit_identical_after_training(tiny_stream: list[Task], tiny: Config) -> None:
    scholar = trained_on_first_task(tiny, tiny_stream)
    previous = scholar.frozen_copy()
    before = {k: v.clone() for k, v in previous.state_dict().items()}
    replay = second_task_with_gr(tiny, tiny_stream, scholar, previous)
    assert replay.draws > 0
    after = previous.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in previous.parameters())
    assert not any(m.training for m in previous.modules())


def test_frozen_previous_scholar_is_in_no_optimizer(tiny_stream: list[Task], tiny: Config,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    optimized: list[int] = []

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, params: Any, **kwargs: Any):
            super().__init__(params, **kwargs)
            optimized.extend(id(p) for group in self.param_groups for p in group["params"])

    scholar = trained_on_first_task(tiny, tiny_stream)
    previous = scholar.frozen_copy()
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    second_task_with_gr(tiny, tiny_stream, scholar, previous)
    assert set(optimized) == {id(p) for p in scholar.parameters()}
    assert {id(p) for p in previous.parameters()}.isdisjoint(optimized)


def test_only_the_new_scholar_is_wrapped(tiny_stream: list[Task], tiny: Config) -> None:
    scholar = trained_on_first_task(tiny, tiny_stream)
    previous = scholar.frozen_copy()
    wrapped: list[nn.Module] = []
    second_task_with_gr(tiny, tiny_stream, scholar, previous, wrap=lambda m: wrapped.append(m) or m)
    assert any(m is scholar.solver for m in wrapped) and any(m is scholar.generator for m in wrapped)
    frozen = {id(p) for p in previous.parameters()}
    assert all(frozen.isdisjoint(id(p) for p in m.parameters()) for m in wrapped)


def solver_weights(result_scholar: Scholar | None) -> dict[str, torch.Tensor]:
    assert result_scholar is not None
    return result_scholar.solver.state_dict()


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ratio_one_equals_training_without_replay(tiny_stream: list[Task]) -> None:
    gr = run_sequence(tiny_config(replay={"arm": "gr", "ratio": 1.0}), tiny_stream)
    none = run_sequence(tiny_config(replay={"arm": "none"}), tiny_stream)
    assert same_weights(solver_weights(gr.scholar), solver_weights(none.scholar))
    assert gr.accuracy_matrix == none.accuracy_matrix


def test_same_seed_and_config_give_the_same_run(tiny_stream: list[Task], tiny: Config) -> None:
    a, b = run_sequence(tiny, tiny_stream), run_sequence(tiny, tiny_stream)
    assert a.accuracy_matrix == b.accuracy_matrix
    assert a.scholar is not None and b.scholar is not None
    assert same_weights(a.scholar.state_dict(), b.scholar.state_dict())


def test_same_seed_gives_the_same_losses(tiny_stream: list[Task], tiny: Config) -> None:
    def losses() -> list[dict[str, float]]:
        events: list[Progress] = []
        scholar = new_scholar(tiny, tiny_stream[0].input_shape, OUTPUTS)
        train_task(scholar, LabelledData.of(tiny_stream[:1]), tiny_stream[0].info, tiny,
                   callback=events.append, log_every=1)
        return [e.losses for e in events]

    assert losses() == losses()


def test_a_different_seed_gives_different_weights(tiny_stream: list[Task]) -> None:
    a = run_sequence(tiny_config(run={"seed": 3}), tiny_stream)
    b = run_sequence(tiny_config(run={"seed": 4}), tiny_stream)
    assert not same_weights(solver_weights(a.scholar), solver_weights(b.scholar))


def test_train_task_reports_progress_with_increasing_iterations(tiny_stream: list[Task], tiny: Config) -> None:
    events: list[Progress] = []
    scholar = new_scholar(tiny, tiny_stream[0].input_shape, OUTPUTS)
    stats = train_task(scholar, LabelledData.of(tiny_stream[:1]), tiny_stream[0].info, tiny,
                       callback=events.append, log_every=5)
    assert [e.iteration for e in events] == [5, 10, 15, 20]
    assert all(e.task == 0 and e.iterations == 20 for e in events)
    assert set(events[-1].losses) == {"solver", "generator"} and events[-1].losses == stats.losses


def test_run_sequence_reports_each_task_after_its_progress(tiny_stream: list[Task], tiny: Config) -> None:
    events: list[Progress | TaskEvaluated] = []
    run_sequence(tiny, tiny_stream, callback=events.append)
    evaluated = [e for e in events if isinstance(e, TaskEvaluated)]
    assert [e.task for e in evaluated] == [0, 1, 2]
    assert [len(e.accuracies) for e in evaluated] == [1, 2, 3]
    tasks_in_order = [e.task for e in events]
    assert tasks_in_order == sorted(tasks_in_order)
    for task in range(3):
        progress = [e for e in events if isinstance(e, Progress) and e.task == task]
        assert progress and progress[-1].iteration == progress[-1].iterations
        assert events.index(progress[-1]) < events.index(evaluated[task])


def numbered_data(n: int = 64) -> LabelledData:
    """Row i is an image filled with the value i, so a batch tells which rows were drawn."""
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()
    y = (torch.arange(n) // 2) % 2
    return LabelledData(x, y, torch.zeros(n, dtype=torch.long), (TaskInfo(0, "t", (0, 1)),))


def row_numbers(batch: torch.Tensor) -> set[int]:
    return set(batch[:, 0, 0, 0].mul(255).round().long().tolist())


def test_shards_of_two_ranks_are_disjoint_halves() -> None:
    data = numbered_data()
    halves = [row_numbers(data.shard(rank, 2).inputs(torch.arange(32))) for rank in (0, 1)]
    assert len(halves[0]) == len(halves[1]) == 32
    assert halves[0].isdisjoint(halves[1]) and halves[0] | halves[1] == set(range(64))


def test_train_task_on_two_ranks_sees_disjoint_rows() -> None:
    config = tiny_config(replay={"arm": "none"})
    data, seen = numbered_data(), []
    for rank in (0, 1):
        recorders: list[Recorder] = []
        scholar = new_scholar(config, (1, 8, 8), OUTPUTS)
        train_task(scholar, data, data.tasks[0], config, rank=rank, world_size=2,
                   wrap=lambda m: recorders.append(Recorder(m)) or recorders[-1])
        seen.append(set().union(*(row_numbers(b) for b in recorders[0].inputs)))
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    assert seen[0] <= set(range(0, 64, 2)) and seen[1] <= set(range(1, 64, 2))


@pytest.mark.parametrize("purpose", [0, 1, 2])
def test_task_rng_differs_per_rank_and_task(purpose: int) -> None:
    def draw(seed: int, task: int, rank: int) -> torch.Tensor:
        return torch.rand(8, generator=task_rng(seed, task, rank, purpose))

    assert torch.equal(draw(1, 0, 0), draw(1, 0, 0))
    assert not torch.equal(draw(1, 0, 0), draw(1, 0, 1))
    assert not torch.equal(draw(1, 0, 0), draw(1, 1, 0))


def test_task_rng_differs_per_purpose() -> None:
    draws = [torch.rand(8, generator=task_rng(1, 0, 0, s)) for s in range(3)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])


def assert_valid_matrix(matrix: Matrix, num_tasks: int = 3) -> None:
    assert len(matrix) == num_tasks
    for i, row in enumerate(matrix):
        assert len(row) == num_tasks
        assert all(a is None for a in row[i + 1:])
        assert all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in row[:i + 1])


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
@pytest.mark.parametrize("arm", ["gr", "er", "none", "joint"])
def test_every_arm_runs_in_every_scenario(tiny_stream: list[Task], arm: str, scenario: str) -> None:
    result = run_sequence(tiny_config(replay={"arm": arm}, stream={"scenario": scenario}), tiny_stream)
    assert_valid_matrix(result.accuracy_matrix)
    assert 0.0 <= result.average_accuracy <= 1.0


def finite_losses(losses: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in losses.values())


def test_soft_targets_run(tiny_stream: list[Task]) -> None:
    result = run_sequence(tiny_config(replay={"targets": "soft"}), tiny_stream)
    assert_valid_matrix(result.accuracy_matrix)
    assert finite_losses(result.training[-1].losses)


def test_wgan_gp_generator_trains(tiny_stream: list[Task]) -> None:
    config = tiny_config(generator={"kind": "wgan-gp", "iterations": 3, "critic_steps": 2})
    result = run_sequence(config, tiny_stream)
    assert_valid_matrix(result.accuracy_matrix)
    assert {"critic", "generator"} <= set(result.training[-1].losses)
    assert finite_losses(result.training[-1].losses)


def test_bf16_precision_runs(tiny_stream: list[Task]) -> None:
    result = run_sequence(tiny_config(run={"precision": "bf16"}), tiny_stream)
    assert_valid_matrix(result.accuracy_matrix)
    assert finite_losses(result.training[-1].losses)


def test_a_diverged_task_ends_the_sequence_naming_the_loss_and_its_rate(tiny_stream: list[Task]) -> None:
    with pytest.raises(Diverged, match=r"^task 0: the solver loss is nan after training \(diverged\); lower solver\.lr$"):
        run_sequence(tiny_config(solver={"lr": 1e20}), tiny_stream)
