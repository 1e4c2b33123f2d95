"""Tasks and streams: the sequences of tasks a scholar learns one after the other.

Labels live in one stream-wide label space: task k of split MNIST owns labels (2k, 2k+1) in the order
its classes were drawn, task k of permuted MNIST owns 10k..10k+9. The scenario decides how those labels
map to the solver's output (see `dgr.scenario`). Images stay uint8 (N, C, H, W) until batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from dgr.config import StreamConfig
from dgr.datasets import PathArg, load_dataset


@dataclass(frozen=True)
class TaskInfo:
    """What is known of a task once its data is gone: enough to evaluate heads and name it."""

    index: int
    name: str
    classes: tuple[int, ...]  # stream-wide labels, contiguous

    @property
    def offset(self) -> int:
        return self.classes[0]

    @property
    def stop(self) -> int:
        return self.classes[-1] + 1

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True, eq=False)
class Task:
    index: int
    name: str
    classes: tuple[int, ...]
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,), stream-wide labels
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def info(self) -> TaskInfo:
        return TaskInfo(self.index, self.name, self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


Split = tuple[torch.Tensor, torch.Tensor]


def _subset(x: torch.Tensor, y: torch.Tensor, limit: int, seed: int) -> Split:
    if limit <= 0 or limit >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit]
    keep, _ = keep.sort()
    return x[keep], y[keep]


def _class_order(config: StreamConfig, seed: int) -> list[int]:
    if config.class_order == "fixed":
        return list(range(10))
    return torch.randperm(10, generator=torch.Generator().manual_seed(seed)).tolist()


def _split(dataset: str, title: str, config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    """Five tasks of two classes each; labels renumbered so task k owns (2k, 2k+1)."""
    train, test = load_dataset(dataset, root, "train"), load_dataset(dataset, root, "test")
    order = _class_order(config, seed)
    relabel = torch.empty(10, dtype=torch.long)
    relabel[torch.tensor(order)] = torch.arange(10)
    tasks = []
    for k in range(5):
        pair = order[2 * k: 2 * k + 2]
        parts = []
        for x, y in (train, test):
            chosen = (y == pair[0]) | (y == pair[1])
            parts.append((x[chosen], relabel[y[chosen]]))
        (tx, ty), (vx, vy) = parts
        tx, ty = _subset(tx, ty, config.train_samples, seed + k)
        vx, vy = _subset(vx, vy, config.test_samples, seed + k)
        name = f"{title} {pair[0]}/{pair[1]}"
        tasks.append(Task(k, name, (2 * k, 2 * k + 1), tx, ty, vx, vy))
    return tasks


def split_mnist(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return _split("mnist", "mnist", config, root, seed)


def split_fashion_mnist(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return _split("fashion_mnist", "fashion", config, root, seed)


def permuted_mnist(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    """`num_tasks` tasks, each MNIST under its own pixel permutation (task 0 keeps the identity)."""
    (x, y), (vx, vy) = load_dataset("mnist", root, "train"), load_dataset("mnist", root, "test")
    x, y = _subset(x, y, config.train_samples, seed)
    vx, vy = _subset(vx, vy, config.test_samples, seed)
    rng = torch.Generator().manual_seed(seed)
    tasks = []
    for k in range(config.num_tasks):
        perm = torch.arange(784) if k == 0 else torch.randperm(784, generator=rng)

        def permute(images: torch.Tensor, p: torch.Tensor = perm) -> torch.Tensor:
            return images.reshape(len(images), 784)[:, p].reshape(images.shape)

        labels = tuple(range(10 * k, 10 * k + 10))
        tasks.append(Task(k, f"permuted mnist {k}", labels, permute(x), y + 10 * k, permute(vx), vy + 10 * k))
    return tasks


def _to_32x32x3(images: torch.Tensor) -> torch.Tensor:
    # MNIST (N, 1, 28, 28) -> (N, 3, 32, 32): zero-pad 2 pixels each side, grey replicated to RGB.
    return F.pad(images, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()


def _digits_domain(order: tuple[str, str], config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    tasks = []
    for k, dataset in enumerate(order):
        (x, y), (vx, vy) = load_dataset(dataset, root, "train"), load_dataset(dataset, root, "test")
        if dataset == "mnist":
            x, vx = _to_32x32x3(x), _to_32x32x3(vx)
        x, y = _subset(x, y, config.train_samples, seed + k)
        vx, vy = _subset(vx, vy, config.test_samples, seed + k)
        labels = tuple(range(10 * k, 10 * k + 10))
        tasks.append(Task(k, dataset, labels, x, y + 10 * k, vx, vy + 10 * k))
    return tasks


def mnist_svhn(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return _digits_domain(("mnist", "svhn"), config, root, seed)


def svhn_mnist(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return _digits_domain(("svhn", "mnist"), config, root, seed)


STREAM_BUILDERS: dict[str, Callable[[StreamConfig, PathArg, int], list[Task]]] = {
    "split_mnist": split_mnist,
    "split_fashion_mnist": split_fashion_mnist,
    "permuted_mnist": permuted_mnist,
    "mnist_svhn": mnist_svhn,
    "svhn_mnist": svhn_mnist,
}


def build_stream(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return STREAM_BUILDERS[config.name](config, root, seed)
