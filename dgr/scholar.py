"""A scholar: a generator that produces past inputs and a solver that labels them.

`sample`, `label` and `replay` run without grad and leave every module's train/eval mode as it was.
The previous task's scholar is a frozen copy: eval mode, no grad, never in an optimizer.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from dgr.config import Config
from dgr.generators import build_generator
from dgr.solvers import build_solver


class Scholar(nn.Module):
    def __init__(self, solver: nn.Module, generator: nn.Module | None, spec: dict[str, Any]):
        super().__init__()
        self.solver = solver
        self.generator = generator
        self.spec = spec  # JSON-able: rebuilds this architecture (see `scholar_from_spec`)

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        if self.generator is None:
            raise ValueError("this scholar has no generator: only the gr arm trains one")
        return self.generator.sample(n, rng)

    @torch.no_grad()
    def label(self, x: torch.Tensor) -> torch.Tensor:
        """Solver logits (B, outputs) for float inputs (B, C, H, W)."""
        return self.solver(x).float()

    @torch.no_grad()
    def replay(self, n: int, rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.sample(n, rng)
        return x, self.label(x)

    def frozen_copy(self) -> "Scholar":
        frozen = copy.deepcopy(self)
        frozen.eval()
        frozen.requires_grad_(False)
        return frozen


def scholar_spec(config: Config, input_shape: tuple[int, ...], outputs: int) -> dict[str, Any]:
    generator = None
    if config.replay.arm == "gr":
        g = config.generator
        generator = {"kind": g.kind, "latent": g.latent, "hidden": g.hidden, "layers": g.layers}
        if g.convolutional:  # specs of fully connected generators stay as they were written
            generator["channels"] = g.channels
    s = config.solver
    return {
        "input_shape": list(input_shape),
        "outputs": outputs,
        "solver": {"kind": s.kind, "hidden": s.hidden, "layers": s.layers},
        "generator": generator,
    }


def scholar_from_spec(spec: dict[str, Any]) -> Scholar:
    """A freshly initialised scholar of the architecture `spec` describes (use the caller's RNG)."""
    from dgr.config import GeneratorConfig, SolverConfig

    shape = tuple(spec["input_shape"])
    solver = build_solver(SolverConfig(**spec["solver"]), shape, spec["outputs"])
    generator = None
    if spec["generator"] is not None:
        generator = build_generator(GeneratorConfig(**spec["generator"]), shape)
    return Scholar(solver, generator, spec)


def new_scholar(config: Config, input_shape: tuple[int, ...], outputs: int) -> Scholar:
    torch.manual_seed(config.run.seed)  # same initial weights on every rank and every rerun
    return scholar_from_spec(scholar_spec(config, input_shape, outputs))
