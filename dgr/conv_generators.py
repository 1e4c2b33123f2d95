"""Convolutional bodies for the generators: DCGAN-style (Radford et al. 2016) at two scales.

An input of C x H x W is halved twice by stride-2 convolutions (C -> c -> 2c channels, c =
`generator.channels`) and rebuilt by two stride-2 transposed convolutions from 2c x H/4 x W/4, so any
H and W divisible by 4 work: 28x28x1 (MNIST, 7x7 at the bottom), 32x32x3 (SVHN, 8x8), 8x8 in tests.

The bodies speak flat pixels, (B, C*H*W), like the fully connected ones: the generator classes in
`dgr.generators` serve both kinds unchanged and the fully connected kinds keep their weight names.
"""

from __future__ import annotations

import math

from torch import nn

from dgr.config import ConfigError

SCALE = 4  # two stride-2 layers each way


def check_shape(kind: str, input_shape: tuple[int, ...]) -> None:
    """Fail at once on an input a convolutional generator cannot rebuild exactly."""
    ok = len(input_shape) == 3 and all(side % SCALE == 0 and side > 0 for side in input_shape[1:])
    if not ok:
        raise ConfigError(f"generator.kind: {kind} needs (C, H, W) inputs with H and W divisible by {SCALE}, "
                          f"got input shape {tuple(input_shape)}")


def _bottom(input_shape: tuple[int, ...], channels: int) -> tuple[int, int, int]:
    _, height, width = input_shape
    return 2 * channels, height // SCALE, width // SCALE


def conv_encoder(input_shape: tuple[int, ...], channels: int) -> tuple[nn.Sequential, int]:
    """Flat pixels (B, C*H*W) -> features (B, 2c*H/4*W/4), and that feature count.

    No normalisation layer: the critic's gradient penalty is per sample, which batch norm would break
    (Gulrajani et al. 2017 use none or layer norm); the VAE's encoder shares the body.
    """
    bottom = _bottom(input_shape, channels)
    body = nn.Sequential(
        nn.Unflatten(1, tuple(input_shape)),
        nn.Conv2d(input_shape[0], channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Flatten(),
    )
    return body, math.prod(bottom)


def conv_decoder(input_shape: tuple[int, ...], latent: int, channels: int, batch_norm: bool) -> nn.Sequential:
    """Codes (B, latent) -> pixel logits (B, C*H*W): project to 2c x H/4 x W/4, two transposed convs.

    `batch_norm` after each hidden layer as in DCGAN's generator (the WGAN-GP's); the VAE's decoder
    goes without, so its samples do not depend on batch statistics.
    """
    bottom = _bottom(input_shape, channels)

    def norm(layer: type[nn.Module], width: int) -> list[nn.Module]:
        return [layer(width)] if batch_norm else []

    return nn.Sequential(
        nn.Linear(latent, math.prod(bottom)), *norm(nn.BatchNorm1d, math.prod(bottom)), nn.ReLU(),
        nn.Unflatten(1, bottom),
        nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), *norm(nn.BatchNorm2d, channels),
        nn.ReLU(),
        nn.ConvTranspose2d(channels, input_shape[0], 4, stride=2, padding=1),
        nn.Flatten(),
    )
