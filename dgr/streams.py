"""Tasks and streams: the sequences of tasks a scholar learns one after the other.

Three stream builders over task sources (`dgr.sources`): `split` (class groups of one source, one task
each), `domains` (one task per source, every source fitted to one input shape) and `permuted` (one
source under a pixel permutation per task). The built-in streams are instances of them (`BUILT_IN`).

Labels live in one stream-wide label space: task k of split MNIST owns labels (2k, 2k+1) in the order
its classes were drawn, task k of permuted MNIST owns 10k..10k+9, a domain task the next K labels. The
scenario decides how those labels map to the solver's output (see `dgr.scenario`). Images stay uint8
(N, C, H, W) until batched.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from dgr.config import ConfigError, StreamConfig
from dgr.datasets import DatasetError, PathArg
from dgr.shapes import InputShape
from dgr.sources import SourceData, Split, load_source, source_classes, source_title


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
    valid_x: torch.Tensor | None = None  # held out of the training data when stream.validation > 0
    valid_y: torch.Tensor | None = None

    @property
    def info(self) -> TaskInfo:
        return TaskInfo(self.index, self.name, self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def _subset(x: torch.Tensor, y: torch.Tensor, limit: int, seed: int) -> Split:
    if limit <= 0 or limit >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit]
    keep, _ = keep.sort()
    return x[keep], y[keep]


def _class_order(config: StreamConfig, num_classes: int, seed: int) -> list[int]:
    if config.class_order == "fixed":
        return list(range(num_classes))
    return torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()


def _source(config: StreamConfig, text: str, root: PathArg) -> SourceData:
    return load_source(text, root, InputShape.of(config), config.class_names)


def _split_plan(config: StreamConfig, root: PathArg, seed: int) -> list[tuple[TaskInfo, list[int]]]:
    """Each task of a class split with the source's labels it takes, in the (fixed or seeded) class order."""
    text, per_task = config.sources[0], config.classes_per_task
    names, title = source_classes(text, root, config.class_names), source_title(text, root)
    order = _class_order(config, len(names), seed)
    if len(names) % per_task == 1:
        raise DatasetError(f"{text}: {len(names)} classes in groups of {per_task} leave the last task with one "
                           f"class ({names[order[-1]]}); a task needs at least two, change stream.classes_per_task")
    plan = []
    for k, first in enumerate(range(0, len(names), per_task)):
        group = order[first:first + per_task]
        name = f"{title} {'/'.join(names[c] for c in group)}"
        plan.append((TaskInfo(k, name, tuple(range(first, first + len(group)))), group))
    return plan


def _domains_plan(config: StreamConfig, root: PathArg) -> list[TaskInfo]:
    """One task per source; task k's labels follow task k-1's."""
    plan, offset = [], 0
    for k, text in enumerate(config.sources):
        size = len(source_classes(text, root, config.class_names))
        plan.append(TaskInfo(k, source_title(text, root), tuple(range(offset, offset + size))))
        offset += size
    return plan


def _permuted_plan(config: StreamConfig, root: PathArg) -> list[TaskInfo]:
    text = config.sources[0]
    size, title = len(source_classes(text, root, config.class_names)), source_title(text, root)
    return [TaskInfo(k, f"permuted {title} {k}", tuple(range(size * k, size * (k + 1)))) for k in range(config.num_tasks)]


def split_stream(config: StreamConfig, root: PathArg, seed: int) -> Iterator[Task]:
    """Groups of `classes_per_task` classes of one source, one task each; labels renumbered so that task k
    owns the next contiguous labels in the class order."""
    plan = _split_plan(config, root, seed)
    source = _source(config, config.sources[0], root)
    relabel = torch.empty(len(source.class_names), dtype=torch.long)
    relabel[torch.tensor([c for _, group in plan for c in group])] = torch.arange(len(source.class_names))
    for info, group in plan:
        parts = []
        for (x, y), limit in ((source.train, config.train_samples), (source.test, config.test_samples)):
            chosen = torch.isin(y, torch.tensor(group))
            parts.append(_subset(x[chosen], relabel[y[chosen]], limit, seed + info.index))
        yield Task(info.index, info.name, info.classes, *parts[0], *parts[1])


def domains_stream(config: StreamConfig, root: PathArg, seed: int) -> Iterator[Task]:
    """One task per source (a new domain each), all at one input shape; a source is read when its task is."""
    shape: tuple[int, ...] | None = None
    for info, text in zip(_domains_plan(config, root), config.sources):
        source = _source(config, text, root)
        (x, y), (vx, vy) = source.train, source.test
        if shape is not None and shape != tuple(x.shape[1:]):
            raise DatasetError(f"{text}: images are {tuple(x.shape[1:])} but {config.sources[0]}'s are {shape} "
                               f"(C, H, W); set stream.image_size and stream.channels")
        shape = tuple(x.shape[1:])
        x, y = _subset(x, y, config.train_samples, seed + info.index)
        vx, vy = _subset(vx, vy, config.test_samples, seed + info.index)
        yield Task(info.index, info.name, info.classes, x, y + info.offset, vx, vy + info.offset)


def permuted_stream(config: StreamConfig, root: PathArg, seed: int) -> Iterator[Task]:
    """`num_tasks` tasks, each one source under its own pixel permutation (task 0 keeps the identity)."""
    plan = _permuted_plan(config, root)
    source = _source(config, config.sources[0], root)
    x, y = _subset(*source.train, config.train_samples, seed)
    vx, vy = _subset(*source.test, config.test_samples, seed)
    pixels = math.prod(x.shape[1:])
    rng = torch.Generator().manual_seed(seed)
    for info in plan:
        perm = torch.arange(pixels) if info.index == 0 else torch.randperm(pixels, generator=rng)

        def permute(images: torch.Tensor) -> torch.Tensor:
            return images.reshape(len(images), pixels)[:, perm].reshape(images.shape)

        yield Task(info.index, info.name, info.classes, permute(x), y + info.offset, permute(vx), vy + info.offset)


def hold_out(task: Task, fraction: float, seed: int) -> Task:
    """`fraction` of each class's training images (at least one, never all) become the validation data."""
    generator = torch.Generator().manual_seed(seed)
    held = []
    for label in task.classes:
        rows = (task.train_y == label).nonzero().flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        count = min(max(round(fraction * len(rows)), 1), len(rows) - 1) if len(rows) > 1 else 0
        held.append(rows[:count])
    valid = torch.cat(held).sort().values
    train = torch.ones(len(task.train_y), dtype=torch.bool)
    train[valid] = False
    return dataclasses.replace(task, train_x=task.train_x[train], train_y=task.train_y[train],
                               valid_x=task.train_x[valid], valid_y=task.train_y[valid])


def _checked(task: Task, config: StreamConfig) -> Task:
    present = torch.unique(task.train_y).tolist()
    if len(present) < 2 or len(task.test_y) == 0:
        what = "no test images" if len(present) >= 2 else f"training images of {len(present)} class(es)"
        limit = f" (stream.train_samples is {config.train_samples})" if config.train_samples else ""
        raise DatasetError(f"{', '.join(config.sources)}: task {task.index} ({task.name}) has {what}{limit}; "
                           f"every task needs training and test images of at least two classes")
    return task


# Each built-in stream is a general one over built-in sources; its tasks are those it always had.
BUILT_IN: dict[str, dict[str, Any]] = {
    "split_mnist": {"name": "split", "sources": ("mnist",)},
    "split_fashion_mnist": {"name": "split", "sources": ("fashion_mnist",)},
    "permuted_mnist": {"name": "permuted", "sources": ("mnist",)},
    "mnist_svhn": {"name": "domains", "sources": ("mnist", "svhn"), "image_size": 32, "fit": "pad", "channels": 3},
    "svhn_mnist": {"name": "domains", "sources": ("svhn", "mnist"), "image_size": 32, "fit": "pad", "channels": 3},
}

STREAM_BUILDERS: dict[str, Callable[[StreamConfig, PathArg, int], Iterator[Task]]] = {
    "split": split_stream,
    "domains": domains_stream,
    "permuted": permuted_stream,
}


def general(config: StreamConfig) -> StreamConfig:
    """A built-in stream's config as the general stream it is; other configs unchanged."""
    return dataclasses.replace(config, **BUILT_IN[config.name]) if config.name in BUILT_IN else config


def stream_infos(config: StreamConfig, root: PathArg, seed: int) -> list[TaskInfo]:
    """What every task of the stream will be (index, name, classes), from the sources' class names alone."""
    config = general(config)
    if config.name == "split":
        return [info for info, _ in _split_plan(config, root, seed)]
    return _domains_plan(config, root) if config.name == "domains" else _permuted_plan(config, root)


def iter_stream(config: StreamConfig, root: PathArg, seed: int) -> Iterator[Task]:
    """The stream's tasks one at a time, each checked (and its validation data held out) as it is built: a
    domains stream reads source k only when task k is reached, a permuted stream permutes one copy per task.
    Bad data in a later source surfaces only when its task is built; `build_stream` checks every task first."""
    config = general(config)
    for task in STREAM_BUILDERS[config.name](config, root, seed):
        task = _checked(task, config)
        yield hold_out(task, config.validation, seed + task.index) if config.validation > 0 else task


def build_stream(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    """Every task of the stream; bad data fails here with a `DatasetError`, before any training."""
    tasks: list[Task] = []
    for task in iter_stream(config, root, seed):
        tasks.append(task)
        if len(tasks) == 1:
            _check_room(general(config), task)
    return tasks


def _check_room(config: StreamConfig, first: Task) -> None:
    """A permuted stream is `num_tasks` copies of its source, all held at once here (the driver evaluates
    and audits every task so far): a count whose copies cannot fit in memory fails after the first task,
    with the figures, rather than in the kernel's out-of-memory killer after minutes of building."""
    if config.name != "permuted":
        return
    tensors = [getattr(first, f.name) for f in dataclasses.fields(first)]  # astuple would deep-copy them
    each = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    need, room = config.num_tasks * each, _memory_available()
    if room is not None and need > room:
        raise ConfigError(f"stream.num_tasks: {config.num_tasks} permuted tasks of {each / 2**20:.1f} MiB each "
                          f"hold {need / 2**30:.1f} GiB, more than the {room / 2**30:.1f} GiB of memory available "
                          f"now; use fewer tasks or fewer images (stream.train_samples, stream.test_samples)")


def _memory_available(root: Path = Path("/")) -> int | None:
    """Bytes the process may still take: Linux's MemAvailable, lowered to what a cgroup v2 memory limit
    (a container's) leaves beyond the cgroup's anonymous memory (its page cache can be reclaimed);
    elsewhere the machine's physical memory; None where neither can be read. `root`: where /proc and /sys
    are (tests give a folder of such files)."""
    try:
        meminfo = dict(line.split(":", 1) for line in (root / "proc/meminfo").read_text().splitlines())
        room = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        limit = (root / "sys/fs/cgroup/memory.max").read_text().strip()
        stat = dict(line.split() for line in (root / "sys/fs/cgroup/memory.stat").read_text().splitlines())
        if limit != "max":
            room = min(room, int(limit) - int(stat["anon"]))
    except (OSError, ValueError, KeyError):
        pass
    return room


def split_mnist(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return build_stream(dataclasses.replace(config, name="split_mnist"), root, seed)


def split_fashion_mnist(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return build_stream(dataclasses.replace(config, name="split_fashion_mnist"), root, seed)


def permuted_mnist(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return build_stream(dataclasses.replace(config, name="permuted_mnist"), root, seed)


def mnist_svhn(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return build_stream(dataclasses.replace(config, name="mnist_svhn"), root, seed)


def svhn_mnist(config: StreamConfig, root: PathArg, seed: int) -> list[Task]:
    return build_stream(dataclasses.replace(config, name="svhn_mnist"), root, seed)
