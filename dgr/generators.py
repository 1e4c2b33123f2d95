"""Generators of a scholar: a VAE and a WGAN-GP, fully connected or convolutional.

`generator.kind`: `vae` (the reference protocol's 2x400 VAE), `wgan-gp` (2x400 generator and critic),
`conv-vae` and `conv-wgan-gp` (DCGAN-style bodies from `dgr.conv_generators`). All produce images in
[0, 1] of the task's input shape; capacity is `latent` and `hidden`/`layers` (fully connected) or
`channels` (convolutional). `forward` is what training calls (so DDP can wrap the module); `sample` is
for replay and never changes the module's train/eval mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dgr.config import GeneratorConfig
from dgr.conv_generators import check_shape, conv_decoder, conv_encoder


def _fc(inputs: int, hidden: int, layers: int, activation: type[nn.Module]) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), activation()]
        width = hidden
    return nn.Sequential(*modules)


class VAE(nn.Module):
    """A VAE with Bernoulli pixels over a flat-pixel encoder and decoder (fully connected or conv)."""

    def __init__(self, input_shape: tuple[int, ...], latent: int, encoder: nn.Module, to_moments: nn.Linear,
                 decoder: nn.Module):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent = latent
        self.encoder = encoder  # (B, D) -> (B, features)
        self.to_moments = to_moments  # (B, features) -> (B, 2 * latent)
        self.decoder = decoder  # (B, latent) -> pixel logits (B, D)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (B, C, H, W), noise (B, latent) ~ N(0, I) -> (pixel logits (B, D), mu, logvar)."""
        mu, logvar = self.to_moments(self.encoder(x.flatten(1))).chunk(2, dim=1)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        z = latent_noise(n, self.latent, rng, self.to_moments.weight.device)
        return torch.sigmoid(self.decoder(z).float()).view(n, *self.input_shape)


def fc_vae(input_shape: tuple[int, ...], latent: int = 100, hidden: int = 400, layers: int = 2) -> VAE:
    """Encoder D-400-400 -> (mu, logvar) of `latent`; decoder latent-400-400-D: the reference protocol's."""
    pixels = math.prod(input_shape)
    encoder = _fc(pixels, hidden, layers, nn.ReLU)
    to_moments = nn.Linear(hidden, 2 * latent)
    decoder = nn.Sequential(_fc(latent, hidden, layers, nn.ReLU), nn.Linear(hidden, pixels))
    return VAE(input_shape, latent, encoder, to_moments, decoder)


def conv_vae(input_shape: tuple[int, ...], latent: int = 100, channels: int = 64) -> VAE:
    encoder, features = conv_encoder(input_shape, channels)
    to_moments = nn.Linear(features, 2 * latent)
    return VAE(input_shape, latent, encoder, to_moments, conv_decoder(input_shape, latent, channels, False))


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
    """Codes (B, latent) -> images (B, C, H, W) in [0, 1] through `net` (codes -> pixel logits (B, D)).

    `sample` runs the net in whatever mode the caller left it: a batch-norm generator in train mode
    normalises with the samples' own statistics (and updates its running averages, as any forward in
    train mode does); the frozen previous generator is in eval mode and changes nothing.
    """

    def __init__(self, input_shape: tuple[int, ...], latent: int, net: nn.Module):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent = latent
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z).float()).view(len(z), *self.input_shape)

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        return self(latent_noise(n, self.latent, rng, next(self.parameters()).device))


class Critic(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net  # flat pixels (B, D) -> (B, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)  # (B,) scores


class WGANGP(nn.Module):
    """Generator + critic pair; only the generator samples. Trained with gradient penalty (Gulrajani 2017)."""

    def __init__(self, latent: int, generator: WGANGenerator, critic: Critic):
        super().__init__()
        self.latent = latent
        self.generator = generator
        self.critic = critic

    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        return self.generator.sample(n, rng)


def fc_wgan(input_shape: tuple[int, ...], latent: int = 100, hidden: int = 400, layers: int = 2) -> WGANGP:
    """Fully connected generator latent-400-400-D and critic D-400-400-1 (leaky ReLU)."""
    pixels = math.prod(input_shape)
    net = nn.Sequential(_fc(latent, hidden, layers, nn.ReLU), nn.Linear(hidden, pixels))
    generator = WGANGenerator(input_shape, latent, net)
    leaky = lambda: nn.LeakyReLU(0.2)  # noqa: E731 - a factory for _fc
    critic = Critic(nn.Sequential(_fc(pixels, hidden, layers, leaky), nn.Linear(hidden, 1)))
    return WGANGP(latent, generator, critic)


def conv_wgan(input_shape: tuple[int, ...], latent: int = 100, channels: int = 64) -> WGANGP:
    """DCGAN generator (transposed convs, batch norm) and a strided-conv critic without normalisation."""
    generator = WGANGenerator(input_shape, latent, conv_decoder(input_shape, latent, channels, True))
    body, features = conv_encoder(input_shape, channels)
    return WGANGP(latent, generator, Critic(nn.Sequential(body, nn.Linear(features, 1))))


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """E[(||grad critic(x_hat)|| - 1)^2] on interpolates x_hat = alpha * real + (1 - alpha) * fake.

    alpha: (B, 1, ..., 1) uniform in [0, 1), one per row.
    """
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def build_generator(config: GeneratorConfig, input_shape: tuple[int, ...]) -> VAE | WGANGP:
    shape = tuple(input_shape)
    if config.convolutional:
        check_shape(config.kind, shape)
        conv = conv_vae if config.kind == "conv-vae" else conv_wgan
        return conv(shape, config.latent, config.channels)
    fc = fc_vae if config.kind == "vae" else fc_wgan
    return fc(shape, config.latent, config.hidden, config.layers)
