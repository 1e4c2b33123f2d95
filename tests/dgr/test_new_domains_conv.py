"""The 32x32x3 path end to end: MNIST -> SVHN (tiny `.mat` and IDX files) with the CNN solver and each
convolutional generator, through the single-process runner, replay included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dgr.sequence import run_sequence
from dgr.streams import build_stream
from tests.conftest import tiny_config
from tests.fakedata import write_mnist, write_svhn


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    write_mnist(path, rng, 3, 2)
    write_svhn(path, rng, 30)
    return path


@pytest.mark.parametrize("kind", ["conv-vae", "conv-wgan-gp"])
def test_mnist_then_svhn_with_a_cnn_solver_and_a_conv_generator(root: Path, kind: str) -> None:
    config = tiny_config(
        stream={"name": "mnist_svhn", "scenario": "domain"},
        solver={"kind": "cnn", "hidden": 16, "layers": 1, "iterations": 3, "batch_size": 8},
        generator={"kind": kind, "latent": 8, "channels": 4, "iterations": 3, "critic_steps": 2},
    )
    tasks = build_stream(config.stream, root, config.run.seed)
    assert [t.input_shape for t in tasks] == [(3, 32, 32)] * 2
    result = run_sequence(config, tasks)
    assert [len(row) for row in result.accuracy_matrix] == [2, 2]
    assert result.accuracy_matrix[1][0] is not None and 0 <= result.accuracy_matrix[1][0] <= 1
    assert result.training[1].iterations == 3 and "generator" in result.training[1].losses
    assert result.scholar is not None
    samples = result.scholar.eval().sample(4)
    assert samples.shape == (4, 3, 32, 32) and 0 <= samples.min() and samples.max() <= 1
