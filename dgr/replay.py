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

from dgr.scenario import Scenario, head_mask, replay_heads
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
        """n replayed inputs (n, C, H, W) in [0, 1] and what the new solver must predict for them."""
        ...


class GenerativeReplay:
    """Samples of the previous scholar's generator, labelled by its solver on every past head."""

    def __init__(self, previous: Scholar, scenario: Scenario, past: Sequence[TaskInfo], latest: TaskInfo,
                 kind: TargetKind = TargetKind.HARD, temperature: float = 2.0):
        self.previous = previous
        self.kind = kind
        self.temperature = temperature
        pairs = replay_heads(scenario, past, latest)
        self.label_heads = torch.tensor([p[0] for p in pairs], dtype=torch.long)  # (H, 2)
        self.train_heads = torch.tensor([p[1] for p in pairs], dtype=torch.long)  # (H, 2)

    def draw(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, Targets]:
        x, logits = self.previous.replay(n, rng)
        return x, self.targets(logits)

    def targets(self, logits: torch.Tensor) -> Targets:
        """Targets from the previous solver's logits (n, outputs): one row per (head, sample).

        Soft targets are zero on outputs the previous solver did not know (van de Ven's padding).
        """
        n = len(logits)
        device = logits.device
        rows = torch.arange(n, device=device).repeat(len(self.label_heads))  # head-major
        label_heads = self.label_heads.to(device).repeat_interleave(n, dim=0)  # (H * n, 2)
        train_heads = self.train_heads.to(device).repeat_interleave(n, dim=0)
        masked = logits[rows].masked_fill(~head_mask(label_heads, logits.shape[1]), float("-inf"))
        if self.kind is TargetKind.HARD:
            return Targets(rows, train_heads, hard=masked.argmax(1))
        return Targets(rows, train_heads, soft=F.softmax(masked / self.temperature, dim=1))


class ExactReplay:
    """Uniform samples of the stored real data of past tasks with their true labels."""

    def __init__(self, stored: LabelledData, scenario: Scenario, latest: TaskInfo,
                 device: torch.device | str = "cpu"):
        self.stored = stored  # keeps past training data on purpose: this arm is not private
        self.labeller = stored.labeller(scenario, latest)  # heads that compete while learning `latest`
        self.device = device

    def draw(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, Targets]:
        index = torch.randint(len(self.stored), (n,), generator=rng)
        x = self.stored.inputs(index, self.device)
        y, ids = self.stored.y[index].to(self.device), self.stored.task_ids[index].to(self.device)
        return x, self.labeller.targets(y, ids)
