"""Labelled data and what the solver must predict for it, in every scenario, as one structure.

`Targets` says, for K target rows, which batch row's logits to read, which outputs compete (a head) and
the answer: a hard output index, or soft probabilities over the head (distillation). New-task data,
exact replay, joint training and generative replay all reduce to it, so one loss function serves all.

Training keeps a task's data on the compute device (`LabelledData.to`) and its label tables beside it,
so building a batch's targets is a few gathers on that device and never a host-device copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from dgr.scenario import Scenario, head, outside_heads, target
from dgr.streams import Task, TaskInfo


@dataclass(frozen=True)
class Targets:
    rows: torch.Tensor | None  # (K,) long: row of the batch whose logits this target reads; None: row k
    heads: torch.Tensor  # (K, 2) long: (start, stop) of the competing outputs
    hard: torch.Tensor | None = None  # (K,) long output index
    soft: torch.Tensor | None = None  # (K, outputs) probabilities, zero outside the head


def solver_loss(logits: torch.Tensor, targets: Targets, temperature: float = 2.0) -> torch.Tensor:
    """Mean cross-entropy over the target rows; soft targets use distillation at `temperature` (x T^2)."""
    chosen = (logits if targets.rows is None else logits[targets.rows]).float()  # (K, outputs)
    outside = outside_heads(targets.heads, chosen.shape[1])
    if targets.hard is not None:
        return F.cross_entropy(chosen.masked_fill(outside, float("-inf")), targets.hard)
    log_p = F.log_softmax(chosen.masked_fill(outside, float("-inf")) / temperature, dim=1)
    return -(targets.soft * log_p.masked_fill(outside, 0.0)).sum(1).mean() * temperature**2


def predictions(logits: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """Arg-max output within each row's head: (B,)."""
    return logits.float().masked_fill(outside_heads(heads, logits.shape[1]), float("-inf")).argmax(1)


@dataclass(frozen=True, eq=False)
class LabelledData:
    """Real images with stream-wide labels and the task each belongs to."""

    x: torch.Tensor  # uint8 (N, C, H, W)
    y: torch.Tensor  # (N,) long
    task_ids: torch.Tensor  # (N,) long index into `tasks`
    tasks: tuple[TaskInfo, ...]

    @staticmethod
    def of(tasks: Sequence[Task], split: str = "train") -> "LabelledData":
        xs = [t.train_x if split == "train" else t.test_x for t in tasks]
        ys = [t.train_y if split == "train" else t.test_y for t in tasks]
        ids = [torch.full((len(y),), i, dtype=torch.long) for i, y in enumerate(ys)]
        if len(tasks) == 1:
            return LabelledData(xs[0], ys[0], ids[0], (tasks[0].info,))
        return LabelledData(torch.cat(xs), torch.cat(ys), torch.cat(ids), tuple(t.info for t in tasks))

    def __len__(self) -> int:
        return len(self.y)

    def shard(self, rank: int, world_size: int) -> "LabelledData":
        return LabelledData(self.x[rank::world_size], self.y[rank::world_size],
                            self.task_ids[rank::world_size], self.tasks)

    def to(self, device: torch.device | str) -> "LabelledData":
        """The same data on `device` (itself if already there). Images stay uint8: 4x less memory."""
        return LabelledData(self.x.to(device), self.y.to(device), self.task_ids.to(device), self.tasks)

    def labeller(self, scenario: Scenario, latest: TaskInfo) -> "Labeller":
        """Label tables on the device of this data's labels."""
        return Labeller.build(scenario, self.tasks, latest, self.y.device)

    def inputs(self, index: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] of the rows `index` (on this data's device): (len(index), C, H, W)."""
        return self.x[index].float().div_(255.0)


@dataclass(frozen=True)
class Labeller:
    """Per-task head and label offset tables, so a batch's targets are two gathers."""

    scenario: Scenario
    heads: torch.Tensor  # (T, 2)
    offsets: torch.Tensor  # (T,) subtracted from labels to get the output index

    @staticmethod
    def build(scenario: Scenario, tasks: Sequence[TaskInfo], latest: TaskInfo,
              device: torch.device | str = "cpu") -> "Labeller":
        heads = torch.tensor([head(scenario, t, latest) for t in tasks], dtype=torch.long, device=device)
        offsets = [int(target(scenario, torch.tensor(t.offset), t)) - t.offset for t in tasks]
        return Labeller(scenario, heads, -torch.tensor(offsets, device=device))

    def targets(self, y: torch.Tensor, task_ids: torch.Tensor) -> Targets:
        """Targets of labels `y` (B,) of tasks `task_ids` (B,), both on this labeller's device."""
        return Targets(None, self.heads[task_ids], hard=y - self.offsets[task_ids])
