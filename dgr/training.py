"""Training one task: the new solver and (for GR) the new generator, against replay of the past.

`train_task` takes everything it uses as arguments, keeps no global state, and runs unchanged on one
rank of several: it shards the new task's data by rank, seeds its replay by (seed, task, rank), and lets
the caller wrap the trained modules (e.g. in DistributedDataParallel) through `wrap`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from dgr.config import Config
from dgr.generators import VAE, WGANGP, gradient_penalty, vae_loss
from dgr.replay import ReplaySource, mix_losses
from dgr.scenario import Scenario
from dgr.scholar import Scholar
from dgr.streams import TaskInfo
from dgr.targets import LabelledData, solver_loss

Wrap = Callable[[nn.Module], nn.Module]
Batch = tuple[torch.Tensor, "torch.Tensor | None"]  # (new inputs, replayed inputs or None)


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


def task_rng(seed: int, task: int, rank: int, stream: int) -> torch.Generator:
    """Independent generator per (seed, task, rank, purpose): ranks replay different samples."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + task) * 1_009 + rank) * 8 + stream)


def precision_context(config: Config, device: torch.device) -> contextlib.AbstractContextManager:
    if config.run.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batches(n: int, size: int, rng: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of shuffled epochs (last partial batch dropped); with replacement if n < size."""
    while True:
        if n < size:
            yield torch.randint(n, (size,), generator=rng)
            continue
        order = torch.randperm(n, generator=rng)
        for start in range(0, n - size + 1, size):
            yield order[start:start + size]


def _adam(module: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, fused=True)


class VAETrainer:
    """One Adam step per iteration on r * ELBO(new) + (1 - r) * ELBO(replayed)."""

    def __init__(self, vae: VAE, config: Config, wrap: Wrap, noise: torch.Generator, device: torch.device):
        self.vae, self.module = vae, wrap(vae)
        self.optimizer = _adam(vae, config.generator.lr)
        self.noise, self.device = noise, device

    def step(self, batch: Batch, ratio: float, draw: Callable[[], Batch]) -> dict[str, float]:
        new, replayed = batch
        x = new if replayed is None else torch.cat([new, replayed])
        noise = torch.randn(len(x), self.vae.latent, generator=self.noise).to(self.device)
        per_sample = vae_loss(x, *self.module(x, noise))
        replay_loss = None if replayed is None else per_sample[len(new):].mean()
        loss = mix_losses(per_sample[:len(new)].mean(), replay_loss, ratio)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"generator": float(loss.detach())}


class WGANGPTrainer:
    """`critic_steps` critic updates with gradient penalty, then one generator update (Adam 0.5, 0.9).

    The real batch is a mixture: each row comes from the new task with probability r, else from replay.
    """

    def __init__(self, gan: WGANGP, config: Config, wrap: Wrap, noise: torch.Generator, device: torch.device):
        g = config.generator
        self.gan, self.generator, self.critic = gan, wrap(gan.generator), wrap(gan.critic)
        self.g_optimizer = _adam(gan.generator, g.lr, (0.5, 0.9))
        self.c_optimizer = _adam(gan.critic, g.lr, (0.5, 0.9))
        self.critic_steps, self.penalty = g.critic_steps, g.gradient_penalty
        self.noise, self.device = noise, device

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.gan.latent, generator=self.noise).to(self.device)

    def _real(self, batch: Batch, ratio: float) -> torch.Tensor:
        new, replayed = batch
        if replayed is None:
            return new
        pick_new = torch.rand(len(new), generator=self.noise).to(self.device) < ratio
        return torch.where(pick_new.view(-1, *[1] * (new.dim() - 1)), new, replayed)

    def step(self, batch: Batch, ratio: float, draw: Callable[[], Batch]) -> dict[str, float]:
        for k in range(self.critic_steps):
            real = self._real(batch if k == 0 else draw(), ratio)
            fake = self.generator(self._z(len(real))).detach()
            scores = self.critic(torch.cat([fake, real]))  # one forward: DDP wants one per backward
            critic_loss = scores[:len(fake)].mean() - scores[len(fake):].mean()
            # The penalty goes through the bare critic: DDP does not support double backward.
            critic_loss = critic_loss + self.penalty * gradient_penalty(self.gan.critic, real, fake, self.noise)
            self.c_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.c_optimizer.step()
        generator_loss = -self.critic(self.generator(self._z(len(real)))).mean()
        self.g_optimizer.zero_grad(set_to_none=True)
        generator_loss.backward()
        self.g_optimizer.step()
        return {"critic": float(critic_loss.detach()), "generator": float(generator_loss.detach())}


def _generator_trainer(scholar: Scholar, config: Config, wrap: Wrap, noise: torch.Generator,
                       device: torch.device) -> VAETrainer | WGANGPTrainer | None:
    if scholar.generator is None or config.generator.iterations == 0:
        return None
    cls = VAETrainer if isinstance(scholar.generator, VAE) else WGANGPTrainer
    return cls(scholar.generator, config, wrap, noise, device)


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
    """Train `scholar` (in place) on `latest`'s data shard mixed with `replay`; returns its statistics."""
    device = torch.device(device)
    seed, t = config.run.seed, latest.index
    data_rng, replay_rng, noise_rng = (task_rng(seed, t, rank, s) for s in range(3))
    shard = data.shard(rank, world_size)
    labeller = shard.labeller(Scenario(config.stream.scenario), latest)
    ratio = config.replay.weight(latest.index + 1)
    replay = replay if ratio < 1.0 else None  # replay would get weight 0
    scholar.train()
    solver, optimizer = wrap(scholar.solver), _adam(scholar.solver, config.solver.lr)
    generator = _generator_trainer(scholar, config, wrap, noise_rng, device)
    # The global batch stays solver.batch_size: each rank takes its share of new and replayed samples.
    size, temperature = max(1, config.solver.batch_size // world_size), config.replay.temperature
    batches = _batches(len(shard), size, data_rng)
    solver_iterations = config.solver.iterations
    iterations = max(solver_iterations, config.generator.iterations if generator else 0)
    precision = precision_context(config, device)

    def draw_inputs() -> Batch:
        index = next(batches)
        return shard.inputs(index, device), None if replay is None else replay.draw(size, replay_rng)[0]

    losses: dict[str, float] = {}
    start = time.perf_counter()
    for it in range(iterations):
        index = next(batches)
        x = shard.inputs(index, device)
        replayed, replay_targets = replay.draw(size, replay_rng) if replay else (None, None)
        with precision:
            if it < solver_iterations:
                targets = labeller.targets(shard.y[index].to(device), shard.task_ids[index].to(device))
                inputs = x if replayed is None else torch.cat([x, replayed])
                logits = solver(inputs)  # (B or 2B, outputs)
                new_loss = solver_loss(logits[:size], targets, temperature)
                replay_loss = None if replayed is None else solver_loss(logits[size:], replay_targets, temperature)
                loss = mix_losses(new_loss, replay_loss, ratio)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses["solver"] = float(loss.detach())
            if generator is not None and it < config.generator.iterations:
                losses.update(generator.step((x, replayed), ratio, draw_inputs))
        if callback is not None and ((it + 1) % log_every == 0 or it + 1 == iterations):
            callback(Progress(latest.index, it + 1, iterations, dict(losses)))
    seconds = time.perf_counter() - start
    return TaskTraining(latest.index, iterations, seconds, iterations / max(seconds, 1e-9), losses)
