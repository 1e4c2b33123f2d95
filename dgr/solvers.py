"""Solvers: the classifiers of a scholar. Inputs are float images in [0, 1], (B, C, H, W)."""

from __future__ import annotations

import math

import torch
from torch import nn

from dgr.config import SolverConfig


def _mlp_body(inputs: int, hidden: int, layers: int) -> list[nn.Module]:
    modules: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return modules


class MLPSolver(nn.Module):
    """`layers` fully connected ReLU layers of `hidden` units (2x400 in the reference protocol)."""

    def __init__(self, input_shape: tuple[int, ...], outputs: int, hidden: int = 400, layers: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), *_mlp_body(math.prod(input_shape), hidden, layers),
                                 nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, outputs) logits


class CNNSolver(nn.Module):
    """Three conv-ReLU-maxpool blocks (32, 64, 128 channels) then `layers` FC layers: for 32x32x3."""

    def __init__(self, input_shape: tuple[int, ...], outputs: int, hidden: int = 400, layers: int = 1):
        super().__init__()
        channels, height, width = input_shape
        blocks: list[nn.Module] = []
        for out in (32, 64, 128):
            blocks += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = out
        features = channels * (height // 8) * (width // 8)
        self.net = nn.Sequential(*blocks, nn.Flatten(), *_mlp_body(features, hidden, layers),
                                 nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_solver(config: SolverConfig, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    cls = MLPSolver if config.kind == "mlp" else CNNSolver
    return cls(tuple(input_shape), outputs, config.hidden, config.layers)
