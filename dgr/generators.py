"""Generators of a scholar: the fully connected VAE of the reference protocol and WGAN-GP.

Both produce images in [0, 1] of the task's input shape and expose their capacity through `latent`,
`hidden` and `layers`. `forward` is what training calls (so DDP can wrap the module); `sample` is
for replay and never changes the module's train/eval mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dgr.config import GeneratorConfig


def _fc(inputs: int, hidden: int, layers: int, activation: type[nn.Module]) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), activation()]
        width = hidden
    return nn.Sequential(*modules)


class VAE(nn.Module):
    """Encoder D-400-400 -> (mu, logvar) of `latent`; decoder latent-400-400-D with Bernoulli pixels."""

    def __init__(self, input_shape: tuple[int, ...], latent: int = 100, hidden: int = 400, layers: int = 2):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent = latent
        pixels = math.prod(input_shape)
        self.encoder = _fc(pixels, hidden, layers, nn.ReLU)
        self.to_moments = nn.Linear(hidden, 2 * latent)
        self.decoder = nn.Sequential(_fc(latent, hidden, layers, nn.ReLU), nn.Linear(hidden, pixels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (B, C, H, W), noise (B, latent) ~ N(0, I) -> (pixel logits (B, D), mu, logvar)."""
        mu, logvar = self.to_moments(self.encoder(x.flatten(1))).chunk(2, dim=1)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        z = latent_noise(n, self.latent, rng, self.to_moments.weight.device)
        return torch.sigmoid(self.decoder(z).float()).view(n, *self.input_shape)


def latent_noise(n: int, latent: int, rng: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, I) codes (n, latent) on `device`, drawn by `rng` where it lives.

    Training passes a generator on the models' device (no copy). A CPU generator still works for a
    CUDA model, at the cost of one copy: PyTorch refuses a CPU generator for a CUDA tensor.
    """
    if rng is None:
        return torch.randn(n, latent, device=device)
    return torch.randn(n, latent, generator=rng, device=rng.device).to(device)


def vae_loss(x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample negative ELBO divided by the pixel count: (B,). Summed BCE + KL keeps their balance."""
    target = x.flatten(1)
    recon = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).float().sum(1)
    return (recon + kl) / target.shape[1]


class WGANGenerator(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], latent: int = 100, hidden: int = 400, layers: int = 2):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent = latent
        self.net = nn.Sequential(_fc(latent, hidden, layers, nn.ReLU), nn.Linear(hidden, math.prod(input_shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z).float()).view(len(z), *self.input_shape)

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        return self(latent_noise(n, self.latent, rng, self.net[-1].weight.device))


class Critic(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], hidden: int = 400, layers: int = 2):
        super().__init__()
        leaky = lambda: nn.LeakyReLU(0.2)  # noqa: E731 - a factory for _fc
        self.net = nn.Sequential(_fc(math.prod(input_shape), hidden, layers, leaky), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)  # (B,) scores


class WGANGP(nn.Module):
    """Generator + critic pair; only the generator samples. Trained with gradient penalty (Gulrajani 2017)."""

    def __init__(self, input_shape: tuple[int, ...], latent: int = 100, hidden: int = 400, layers: int = 2):
        super().__init__()
        self.latent = latent
        self.generator = WGANGenerator(input_shape, latent, hidden, layers)
        self.critic = Critic(input_shape, hidden, layers)

    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        return self.generator.sample(n, rng)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """E[(||grad critic(x_hat)|| - 1)^2] on interpolates x_hat = alpha * real + (1 - alpha) * fake.

    alpha: (B, 1, ..., 1) uniform in [0, 1), one per row.
    """
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def build_generator(config: GeneratorConfig, input_shape: tuple[int, ...]) -> nn.Module:
    cls = VAE if config.kind == "vae" else WGANGP
    return cls(tuple(input_shape), config.latent, config.hidden, config.layers)
