"""Training one task: the new solver and (for GR) the new generator, against replay of the past.

`train_task` takes everything it uses as arguments, keeps no global state, and runs unchanged on one
rank of several: it shards the new task's data by rank, seeds its replay by (seed, task, rank), and lets
the caller wrap the trained modules (e.g. in DistributedDataParallel) through `wrap`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from dgr.config import Config
from dgr.replay import ReplaySource
from dgr.scenario import Scenario
from dgr.scholar import Scholar
from dgr.steps import Batch, Wrap, adam, generator_trainer, solver_step
from dgr.streams import TaskInfo
from dgr.targets import LabelledData


@dataclass(frozen=True)
class Progress:
    """Reported through the callback every `log_every` iterations and at the end of a task."""

    task: int
    iteration: int
    iterations: int
    losses: dict[str, float]


@dataclass(frozen=True)
class TaskTraining:
    task: int
    iterations: int
    seconds: float
    iterations_per_second: float
    losses: dict[str, float]


def _identity(module: nn.Module) -> nn.Module:
    return module


def task_rng(seed: int, task: int, rank: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Independent generator per (seed, task, rank, purpose) on `device`: ranks replay different samples.

    Seeded the same on every device; on the CPU it draws exactly what a plain `torch.Generator()` would.
    """
    seed = ((seed * 1_000_003 + task) * 1_009 + rank) * 8 + stream
    return torch.Generator(device=device).manual_seed(seed)


class Diverged(RuntimeError):
    """A task ended with a loss that is not a finite number: its scholar is not worth keeping or replaying."""


def check_finite(task: int, losses: dict[str, float]) -> None:
    """Raise `Diverged` naming the loss and the learning rate that drives it."""
    for name, value in losses.items():
        if not math.isfinite(value):
            rate = "solver.lr" if name == "solver" else "generator.lr"
            raise Diverged(f"task {task}: the {name} loss is {value} after training (diverged); lower {rate}")


def precision_context(config: Config, device: torch.device) -> contextlib.AbstractContextManager:
    if config.run.precision == "bf16":
        # No cast cache: a WGAN-GP iteration updates its critic several times in one region, and a cached
        # bf16 copy of a weight would hide each update from the steps after it.
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def _batches(n: int, size: int, rng: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices (on `rng`'s device) of shuffled epochs (last partial batch dropped); with replacement if n < size."""
    while True:
        if n < size:
            yield torch.randint(n, (size,), generator=rng, device=rng.device)
            continue
        order = torch.randperm(n, generator=rng, device=rng.device)
        for start in range(0, n - size + 1, size):
            yield order[start:start + size]


def _floats(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(value) for name, value in losses.items()}


def train_task(
    scholar: Scholar,
    data: LabelledData,
    latest: TaskInfo,
    config: Config,
    replay: ReplaySource | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
    wrap: Wrap = _identity,
    callback: Callable[[Progress], None] | None = None,
    log_every: int = 100,
) -> TaskTraining:
    """Train `scholar` (in place) on `latest`'s data shard mixed with `replay`; returns its statistics.

    The shard moves to `device` once; batches, replay and noise are drawn there, and losses stay on the
    device until the callback reads them (every `log_every` iterations and at the end).
    """
    device = torch.device(device)
    seed, t = config.run.seed, latest.index
    data_rng, replay_rng, noise_rng = (task_rng(seed, t, rank, s, device) for s in range(3))
    shard = data.shard(rank, world_size).to(device)
    labeller = shard.labeller(Scenario(config.stream.scenario), latest)
    ratio = config.replay.weight(latest.index + 1)
    replay = replay if ratio < 1.0 else None  # replay would get weight 0
    scholar.train()
    solver, optimizer = wrap(scholar.solver), adam(scholar.solver, config.solver.lr)
    generator = generator_trainer(scholar.generator, config, wrap, noise_rng)
    # The global batch stays solver.batch_size: each rank takes its share of new and replayed samples.
    size, temperature = max(1, config.solver.batch_size // world_size), config.replay.temperature
    batches = _batches(len(shard), size, data_rng)
    solver_iterations = config.solver.iterations
    generator_iterations = config.generator.iterations if generator else 0
    iterations = max(solver_iterations, generator_iterations)
    precision = precision_context(config, device)

    def draw() -> Batch:
        index = next(batches)
        x, targets = shard.inputs(index), labeller.targets(shard.y[index], shard.task_ids[index])
        if replay is None:
            return Batch(x, len(x), targets)
        replayed, replay_targets = replay.draw(size, replay_rng)
        return Batch(torch.cat([x, replayed]), len(x), targets, replay_targets)

    def draw_inputs() -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next batch's inputs, new and replayed, unlabelled (the WGAN-GP's extra critic steps)."""
        x = shard.inputs(next(batches))
        return x, None if replay is None else replay.inputs(size, replay_rng)

    losses: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    for it in range(iterations):
        batch = draw()
        with precision:
            if it < solver_iterations:
                losses["solver"] = solver_step(solver, optimizer, batch, ratio, temperature)
            if generator is not None and it < generator_iterations:
                losses.update(generator.step(batch, ratio, draw_inputs))
        if callback is not None and ((it + 1) % log_every == 0 or it + 1 == iterations):
            callback(Progress(latest.index, it + 1, iterations, _floats(losses)))
    final = _floats(losses)
    seconds = time.perf_counter() - start
    return TaskTraining(latest.index, iterations, seconds, iterations / max(seconds, 1e-9), final)
