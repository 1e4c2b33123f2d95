"""dgr.streams on a fake data root: split, permuted and MNIST->SVHN streams built from tiny files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dgr.config import ConfigError, StreamConfig
from dgr.datasets import load_dataset
from tests.fakedata import write_mnist, write_svhn
from dgr.streams import Task, build_stream, mnist_svhn, permuted_mnist, split_mnist, svhn_mnist

TRAIN_PER_DIGIT, TEST_PER_DIGIT, SVHN_PER_SPLIT = 20, 10, 30


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    write_mnist(path, rng, TRAIN_PER_DIGIT, TEST_PER_DIGIT)
    write_svhn(path, rng, SVHN_PER_SPLIT)
    return path


def digits(images: torch.Tensor) -> set[int]:
    return set(images[:, 0, 0, 0].tolist())


def test_split_mnist_has_five_tasks_of_two_labels(root: Path) -> None:
    tasks = split_mnist(StreamConfig(), root, seed=1)
    assert [t.classes for t in tasks] == [(2 * k, 2 * k + 1) for k in range(5)]
    for k, task in enumerate(tasks):
        assert set(task.train_y.tolist()) == set(task.test_y.tolist()) == {2 * k, 2 * k + 1}
        assert (len(task.train_y), len(task.test_y)) == (2 * TRAIN_PER_DIGIT, 2 * TEST_PER_DIGIT)
        assert task.input_shape == (1, 28, 28) and task.train_x.dtype == torch.uint8


def test_fixed_class_order_keeps_the_digits_as_labels(root: Path) -> None:
    for task in split_mnist(StreamConfig(class_order="fixed"), root, seed=1):
        assert torch.equal(task.train_x[:, 0, 0, 0].long(), task.train_y)


def seeded_order(root: Path, seed: int) -> list[list[int]]:
    """Digits of each task, in label order, under the seeded class order."""
    tasks = split_mnist(StreamConfig(class_order="seeded"), root, seed=seed)
    return [[int(t.train_x[t.train_y == label][0, 0, 0, 0]) for label in t.classes] for t in tasks]


def test_seeded_class_order_is_a_permutation_of_the_digits(root: Path) -> None:
    order = seeded_order(root, seed=1)
    assert sorted(d for pair in order for d in pair) == list(range(10))
    assert order != [[2 * k, 2 * k + 1] for k in range(5)]


def test_seeded_class_order_is_deterministic_by_seed(root: Path) -> None:
    assert seeded_order(root, seed=1) == seeded_order(root, seed=1)
    assert seeded_order(root, seed=1) != seeded_order(root, seed=2)


def test_seeded_labels_follow_the_digits_consistently(root: Path) -> None:
    for task in split_mnist(StreamConfig(class_order="seeded"), root, seed=5):
        for x, y in ((task.train_x, task.train_y), (task.test_x, task.test_y)):
            pairs = set(zip(x[:, 0, 0, 0].tolist(), y.tolist()))
            assert len(pairs) == 2 and len(digits(x)) == 2  # one label per digit, one digit per label


def column_permutation(original: torch.Tensor, permuted: torch.Tensor) -> list[int]:
    """p with permuted[:, j] == original[:, p[j]] over the flattened pixels (columns are unique here)."""
    source = {bytes(col.tolist()): i for i, col in enumerate(original.flatten(1).T)}
    return [source[bytes(col.tolist())] for col in permuted.flatten(1).T]


PERMUTED = StreamConfig(name="permuted_mnist", num_tasks=3)


def test_permuted_mnist_permutes_pixels_per_task(root: Path) -> None:
    original, _ = load_dataset("mnist", root, "train")
    perms = [column_permutation(original, t.train_x) for t in permuted_mnist(PERMUTED, root, seed=1)]
    assert len(perms) == 3
    assert perms[0] == list(range(784))
    assert all(sorted(p) == list(range(784)) for p in perms)
    assert perms[1] != perms[0] and perms[2] != perms[0] and perms[1] != perms[2]


def test_permuted_mnist_uses_one_permutation_for_train_and_test(root: Path) -> None:
    (train, _), (test, _) = load_dataset("mnist", root, "train"), load_dataset("mnist", root, "test")
    for task in permuted_mnist(PERMUTED, root, seed=1):
        assert column_permutation(train, task.train_x) == column_permutation(test, task.test_x)


def test_permuted_mnist_labels_are_offset_by_ten_per_task(root: Path) -> None:
    (_, train_digits), (_, test_digits) = load_dataset("mnist", root, "train"), load_dataset("mnist", root, "test")
    for k, task in enumerate(permuted_mnist(PERMUTED, root, seed=1)):
        assert task.classes == tuple(range(10 * k, 10 * k + 10))
        assert torch.equal(task.train_y, train_digits + 10 * k) and torch.equal(task.test_y, test_digits + 10 * k)


def test_permutations_are_deterministic_by_seed(root: Path) -> None:
    a, b, c = (permuted_mnist(PERMUTED, root, seed=s)[1].train_x for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("config", [StreamConfig(train_samples=7, test_samples=3),
                                    StreamConfig(name="permuted_mnist", num_tasks=2, train_samples=7,
                                                 test_samples=3)])
def test_sample_limits_apply_per_task(root: Path, config: StreamConfig) -> None:
    for task in build_stream(config, root, seed=1):
        assert (len(task.train_x), len(task.train_y)) == (7, 7)
        assert (len(task.test_x), len(task.test_y)) == (3, 3)
        assert set(task.train_y.tolist()) <= set(task.classes)


def test_train_samples_zero_keeps_everything(root: Path) -> None:
    task = split_mnist(StreamConfig(train_samples=0), root, seed=1)[0]
    assert len(task.train_y) == 2 * TRAIN_PER_DIGIT


def assert_mnist_as_32x32x3(task: Task, root: Path) -> None:
    original, labels = load_dataset("mnist", root, "train")
    assert task.input_shape == (3, 32, 32)
    for c in range(3):
        assert torch.equal(task.train_x[:, c, 2:30, 2:30], original[:, 0])
    border = task.train_x.clone()
    border[:, :, 2:30, 2:30] = 0
    assert not border.any()
    assert torch.equal(task.train_y, labels + task.info.offset)


def test_mnist_svhn_pads_mnist_and_offsets_labels(root: Path) -> None:
    tasks = mnist_svhn(StreamConfig(name="mnist_svhn"), root, seed=1)
    assert [t.classes for t in tasks] == [tuple(range(10)), tuple(range(10, 20))]
    assert_mnist_as_32x32x3(tasks[0], root)
    svhn, svhn_digits = load_dataset("svhn", root, "train")
    assert tasks[1].input_shape == (3, 32, 32)
    assert torch.equal(tasks[1].train_x, svhn)
    assert torch.equal(tasks[1].train_y, svhn_digits + 10)
    assert set(tasks[1].test_y.tolist()) == set(range(10, 20))


def test_svhn_mnist_reverses_the_order(root: Path) -> None:
    tasks = svhn_mnist(StreamConfig(name="svhn_mnist"), root, seed=1)
    assert [t.name for t in tasks] == ["svhn", "mnist"]
    assert_mnist_as_32x32x3(tasks[1], root)
    assert set(tasks[0].train_y.tolist()) == set(range(10))


def test_a_permuted_stream_larger_than_memory_fails_after_its_first_task(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dgr.streams as streams

    first = build_stream(dataclasses.replace(PERMUTED, num_tasks=1), root, seed=1)[0]
    each = sum(t.numel() * t.element_size() for t in (first.train_x, first.train_y, first.test_x, first.test_y))
    monkeypatch.setattr(streams, "_memory_available", lambda: int(2.5 * each))
    assert len(build_stream(dataclasses.replace(PERMUTED, num_tasks=2), root, seed=1)) == 2
    built = []
    permuted = streams.STREAM_BUILDERS["permuted"]
    monkeypatch.setitem(streams.STREAM_BUILDERS, "permuted",
                        lambda *args: (built.append(t) or t for t in permuted(*args)))
    with pytest.raises(ConfigError, match=r"^stream\.num_tasks: 3 permuted tasks .* more than the") as info:
        build_stream(PERMUTED, root, seed=1)
    assert len(built) == 1 and "\n" not in str(info.value)


def test_the_memory_available_is_read_on_this_machine() -> None:
    from dgr.streams import _memory_available

    room = _memory_available()
    assert isinstance(room, int) and room > 0


def test_a_container_memory_limit_lowers_the_memory_available(tmp_path: Path) -> None:
    from dgr.streams import _memory_available

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal: 64000000 kB\nMemAvailable: 50000000 kB\n")
    assert _memory_available(tmp_path) == 50000000 * 1024  # no cgroup limit: the machine's figure
    cgroup = tmp_path / "sys" / "fs" / "cgroup"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.stat").write_text("anon 1000\nfile 5000\n")
    assert _memory_available(tmp_path) == 50000000 * 1024
    (cgroup / "memory.max").write_text(f"{8 * 2**30}\n")  # the page cache ("file") can be reclaimed
    assert _memory_available(tmp_path) == 8 * 2**30 - 1000
