"""One optimisation step of each model of a scholar, given its batch and its noise.

The steps take everything random as arguments (the batch, the VAE's noise, the WGAN-GP's codes and
interpolation weights), so one process on a batch and several DDP ranks on its shards can be fed the
same numbers. They return losses as detached tensors: reading one as a float waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dgr.config import Config
from dgr.generators import VAE, WGANGP, gradient_penalty, latent_noise, vae_loss
from dgr.replay import mix_losses
from dgr.targets import Targets, solver_loss

Wrap = Callable[[nn.Module], nn.Module]
# Another batch's new-task inputs and replayed inputs (None without replay), unlabelled: all that the
# WGAN-GP's extra critic steps need, so they never run the previous solver.
DrawInputs = Callable[[], tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass(frozen=True)
class Batch:
    """New-task rows first, then replayed rows, in one tensor so each model runs one forward."""

    x: torch.Tensor  # (B_new + B_replayed, C, H, W) in [0, 1]
    new: int  # rows [0, new) are the new task's
    targets: Targets  # of the new rows
    replay_targets: Targets | None = None  # of the replayed rows; None without replay

    @property
    def replayed(self) -> torch.Tensor | None:
        return None if self.replay_targets is None else self.x[self.new:]


def adam(module: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, fused=True)


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, inputs: list[nn.Parameter] | None = None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward(inputs=inputs)
    optimizer.step()


def solver_step(solver: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, ratio: float,
                temperature: float) -> torch.Tensor:
    """One step on r * loss(new rows) + (1 - r) * loss(replayed rows)."""
    logits = solver(batch.x)  # (B, outputs)
    new_loss = solver_loss(logits[:batch.new], batch.targets, temperature)
    replay_targets = batch.replay_targets
    replay_loss = None if replay_targets is None else solver_loss(logits[batch.new:], replay_targets, temperature)
    loss = mix_losses(new_loss, replay_loss, ratio)
    _update(optimizer, loss)
    return loss.detach()


class VAETrainer:
    """One Adam step per iteration on r * ELBO(new) + (1 - r) * ELBO(replayed)."""

    def __init__(self, vae: VAE, config: Config, wrap: Wrap, rng: torch.Generator):
        self.vae, self.module = vae, wrap(vae)
        self.optimizer = adam(vae, config.generator.learning_rate)
        self.rng = rng  # on the models' device

    def step(self, batch: Batch, ratio: float, draw_inputs: DrawInputs) -> dict[str, torch.Tensor]:
        noise = latent_noise(len(batch.x), self.vae.latent, self.rng, batch.x.device)
        return {"generator": self.update(batch, ratio, noise)}

    def update(self, batch: Batch, ratio: float, noise: torch.Tensor) -> torch.Tensor:
        """The step on `batch` with reparameterisation noise (B, latent)."""
        per_sample = vae_loss(batch.x, *self.module(batch.x, noise))
        replay_loss = None if batch.replayed is None else per_sample[batch.new:].mean()
        loss = mix_losses(per_sample[:batch.new].mean(), replay_loss, ratio)
        _update(self.optimizer, loss)
        return loss.detach()


class WGANGPTrainer:
    """`critic_steps` critic updates with gradient penalty, then one generator update (Adam 0.5, 0.9).

    The real batch is a mixture: each row comes from the new task with probability r, else from replay.
    """

    def __init__(self, gan: WGANGP, config: Config, wrap: Wrap, rng: torch.Generator):
        g = config.generator
        self.gan, self.generator, self.critic = gan, wrap(gan.generator), wrap(gan.critic)
        self.g_optimizer = adam(gan.generator, g.learning_rate, (0.5, 0.9))
        self.c_optimizer = adam(gan.critic, g.learning_rate, (0.5, 0.9))
        self.critic_steps, self.penalty = g.critic_steps, g.gradient_penalty
        self.rng = rng  # on the models' device

    def _z(self, n: int, device: torch.device) -> torch.Tensor:
        return latent_noise(n, self.gan.latent, self.rng, device)

    def _real(self, new: torch.Tensor, replayed: torch.Tensor | None, ratio: float) -> torch.Tensor:
        if replayed is None:
            return new
        pick_new = torch.rand(len(new), generator=self.rng, device=new.device) < ratio
        return torch.where(pick_new.view(-1, *[1] * (new.dim() - 1)), new, replayed)

    def step(self, batch: Batch, ratio: float, draw_inputs: DrawInputs) -> dict[str, torch.Tensor]:
        for k in range(self.critic_steps):
            real = self._real(*((batch.x[:batch.new], batch.replayed) if k == 0 else draw_inputs()), ratio)
            z = self._z(len(real), real.device)
            alpha = torch.rand(len(real), *([1] * (real.dim() - 1)), generator=self.rng, device=real.device)
            critic_loss = self.critic_update(real, z, alpha)
        return {"critic": critic_loss, "generator": self.generator_update(self._z(len(real), real.device))}

    def critic_loss(self, real: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """E[critic(fake)] - E[critic(real)] + penalty; fakes from codes z (B, latent), made without a graph."""
        with torch.no_grad():
            fake = self.gan.generator(z)
        scores = self.critic(torch.cat([fake, real]))  # one forward: DDP wants one per backward
        loss = scores[:len(fake)].mean() - scores[len(fake):].mean()
        # The penalty goes through the bare critic (DDP does not support double backward). Its gradient
        # reaches the same parameters in the same backward, so DDP averages it with the rest.
        return loss + self.penalty * gradient_penalty(self.gan.critic, real, fake, alpha)

    def critic_update(self, real: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """One critic step: real rows, codes z (B, latent) for the fakes, interpolation weights alpha."""
        loss = self.critic_loss(real, z, alpha)
        _update(self.c_optimizer, loss)
        return loss.detach()

    def generator_update(self, z: torch.Tensor) -> torch.Tensor:
        """One generator step on codes z. The critic's weights get no gradient: none to compute or reduce."""
        loss = -self.gan.critic(self.generator(z)).mean()
        _update(self.g_optimizer, loss, list(self.gan.generator.parameters()))
        return loss.detach()


def generator_trainer(vae_or_gan: nn.Module | None, config: Config, wrap: Wrap,
                      rng: torch.Generator) -> VAETrainer | WGANGPTrainer | None:
    if vae_or_gan is None or config.generator.iterations == 0:
        return None
    cls = VAETrainer if isinstance(vae_or_gan, VAE) else WGANGPTrainer
    return cls(vae_or_gan, config, wrap, rng)
