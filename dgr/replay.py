"""Replay arms and the loss mix.

- GR: generative replay, inputs sampled from the previous generator, labelled by the previous solver.
- ER: exact replay of the real past data, true labels. A non-private upper bound: it stores past data.
- NONE: fine-tuning on the new task only.
- JOINT: train on the union of all tasks so far (the upper bound; stores all data).
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

from dgr.scenario import Scenario, outside_heads, replay_heads
from dgr.scholar import Scholar
from dgr.streams import TaskInfo
from dgr.targets import LabelledData, Targets


class ReplayArm(Enum):
    GR = "gr"
    ER = "er"
    NONE = "none"
    JOINT = "joint"


class TargetKind(Enum):
    HARD = "hard"  # previous solver's arg-max
    SOFT = "soft"  # previous solver's softened probabilities (distillation)


def mix_losses(new: torch.Tensor, replay: torch.Tensor | None, ratio: float) -> torch.Tensor:
    """r * new-task loss + (1 - r) * replay loss; without replay the new-task loss alone."""
    if replay is None or ratio == 1.0:
        return new
    return ratio * new + (1.0 - ratio) * replay


class ReplaySource(Protocol):
    def draw(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, Targets]:
        """n replayed inputs (n, C, H, W) in [0, 1] and what the new solver must predict for them.

        `rng` is a generator on the device the replayed inputs are made on (the models' device).
        """
        ...

    def inputs(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """The inputs `draw` would give for the same `rng` state, without their targets (no labelling)."""
        ...


_Layout = tuple["torch.Tensor | None", torch.Tensor, torch.Tensor]  # rows, labelling mask, training heads


class GenerativeReplay:
    """Samples of the previous scholar's generator, labelled by its solver on every past head."""

    def __init__(self, previous: Scholar, scenario: Scenario, past: Sequence[TaskInfo], latest: TaskInfo,
                 kind: TargetKind = TargetKind.HARD, temperature: float = 2.0):
        self.previous = previous
        self.kind = kind
        self.temperature = temperature
        self.pairs = replay_heads(scenario, past, latest)
        self._layouts: dict[tuple[int, int, torch.device], _Layout] = {}

    def draw(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, Targets]:
        x, logits = self.previous.replay(n, rng)
        return x, self.targets(logits)

    def inputs(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return self.previous.sample(n, rng)

    def targets(self, logits: torch.Tensor) -> Targets:
        """Targets from the previous solver's logits (n, outputs): one row per (head, sample).

        Soft targets are zero on outputs the previous solver did not know (van de Ven's padding).
        """
        rows, label_outside, train_heads = self._layout(*logits.shape, logits.device)
        masked = (logits if rows is None else logits[rows]).masked_fill(label_outside, float("-inf"))
        if self.kind is TargetKind.HARD:
            return Targets(rows, train_heads, hard=masked.argmax(1))
        return Targets(rows, train_heads, soft=F.softmax(masked / self.temperature, dim=1))

    def _layout(self, n: int, width: int, device: torch.device) -> _Layout:
        """Rows, labelling mask and training heads for n samples, head-major; made once per batch size."""
        key = (n, width, device)
        if key not in self._layouts:
            label_heads = torch.tensor([p[0] for p in self.pairs], device=device).repeat_interleave(n, dim=0)
            train_heads = torch.tensor([p[1] for p in self.pairs], device=device).repeat_interleave(n, dim=0)
            rows = None if len(self.pairs) == 1 else torch.arange(n, device=device).repeat(len(self.pairs))
            self._layouts[key] = rows, outside_heads(label_heads, width), train_heads  # (H * n, ...)
        return self._layouts[key]


class ExactReplay:
    """Uniform samples of the stored real data of past tasks with their true labels."""

    def __init__(self, stored: LabelledData, scenario: Scenario, latest: TaskInfo,
                 device: torch.device | str = "cpu"):
        # Keeps past training data on purpose (this arm is not private), on the device, moved once.
        self.stored = stored.to(device)
        self.labeller = self.stored.labeller(scenario, latest)  # heads that compete while learning `latest`

    def draw(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, Targets]:
        index = self._index(n, rng)
        targets = self.labeller.targets(self.stored.y[index], self.stored.task_ids[index])
        return self.stored.inputs(index), targets

    def inputs(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return self.stored.inputs(self._index(n, rng))

    def _index(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.stored), (n,), generator=rng, device=self.stored.y.device)
