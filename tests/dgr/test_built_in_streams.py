"""The built-in streams, now instances of the general builders, give the tasks they gave before.

The digests were computed with the code before the builders over sources existed (git 6758629), on the
same tiny fake data root: every task's index, name, classes and the bytes, dtype and shape of its tensors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from dgr.config import StreamConfig
from dgr.streams import build_stream
from tests.fakedata import write_mnist, write_svhn

CONFIGS = {
    "split_mnist": StreamConfig(),
    "split_mnist_seeded": StreamConfig(class_order="seeded"),
    "split_mnist_limits": StreamConfig(train_samples=7, test_samples=3),
    "split_fashion_seeded": StreamConfig(name="split_fashion_mnist", class_order="seeded"),
    "permuted": StreamConfig(name="permuted_mnist", num_tasks=3),
    "permuted_limits": StreamConfig(name="permuted_mnist", num_tasks=2, train_samples=50, test_samples=20),
    "mnist_svhn": StreamConfig(name="mnist_svhn", train_samples=25),
    "svhn_mnist": StreamConfig(name="svhn_mnist"),
}
BEFORE = {
    ("split_mnist", 1): "0dfa95486b1d662b",
    ("split_mnist", 4): "0dfa95486b1d662b",
    ("split_mnist_seeded", 1): "e957f2af96b618a6",
    ("split_mnist_seeded", 4): "4493a2d301e68c04",
    ("split_mnist_limits", 1): "0410e65e884563cd",
    ("split_mnist_limits", 4): "b73342054b882cb8",
    ("split_fashion_seeded", 1): "eb06af469b4a0ea0",
    ("split_fashion_seeded", 4): "3ab69c0b8c3e9602",
    ("permuted", 1): "c996f7604b9abf48",
    ("permuted", 4): "d5a5987c3a898883",
    ("permuted_limits", 1): "1981518d1baafd57",
    ("permuted_limits", 4): "fe513dc272cc4780",
    ("mnist_svhn", 1): "a504007510328dd4",
    ("mnist_svhn", 4): "9d068c953a025c43",
    ("svhn_mnist", 1): "7109b5ed1342969b",
    ("svhn_mnist", 4): "7109b5ed1342969b",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    write_mnist(path, rng, 20, 10)
    write_mnist(path, rng, 20, 10, folder="FashionMNIST")
    write_svhn(path, rng, 30)
    return path


def digest(config: StreamConfig, root: Path, seed: int) -> str:
    sha = hashlib.sha256()
    for t in build_stream(config, root, seed):
        sha.update(repr((t.index, t.name, t.classes)).encode())
        for tensor in (t.train_x, t.train_y, t.test_x, t.test_y):
            sha.update(repr((tensor.dtype, tuple(tensor.shape))).encode())
            sha.update(tensor.contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


@pytest.mark.parametrize("key, seed", sorted(BEFORE))
def test_built_in_stream_is_bit_identical_to_before(root: Path, key: str, seed: int) -> None:
    assert digest(CONFIGS[key], root, seed) == BEFORE[(key, seed)]


def test_the_configs_kind_of_each_built_in_stream_is_the_builder_it_is_built_with() -> None:
    """The config refuses keys of other kinds of stream by STREAM_KIND; the streams build by BUILT_IN."""
    from dgr.config import STREAM_KIND, STREAMS
    from dgr.streams import BUILT_IN

    assert set(STREAM_KIND) == set(BUILT_IN) == set(STREAMS)
    assert STREAM_KIND == {name: spec["name"] for name, spec in BUILT_IN.items()}
