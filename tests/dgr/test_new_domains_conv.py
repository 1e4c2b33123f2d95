"""The 32x32x3 path end to end: MNIST -> SVHN (tiny `.mat` and IDX files) with the CNN solver and each
convolutional generator, as the example configs set them up, through the single-process runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dgr.config import from_flat
from dgr.sequence import run_sequence
from dgr.streams import build_stream
from tests.example_configs import example_config
from tests.fakedata import write_mnist, write_svhn

yaml = pytest.importorskip("yaml")  # absent where only torch is (a GPU machine)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    write_mnist(path, rng, 3, 2)
    write_svhn(path, rng, 30)
    return path


TINY_BUDGET = {"solver.hidden": 16, "solver.iterations": 3, "solver.batch_size": 8, "generator.latent": 8,
               "generator.channels": 4, "generator.iterations": 3, "generator.critic_steps": 2,
               "run.device": "cpu", "run.eval_batch_size": 64}


@pytest.mark.parametrize("name, kind", [("mnist_svhn.yaml", "conv-vae"), ("mnist_svhn_wgan.yaml", "conv-wgan-gp")])
def test_mnist_then_svhn_with_a_cnn_solver_and_a_conv_generator(root: Path, name: str, kind: str) -> None:
    example = example_config(name)
    assert (example.solver.kind, example.generator.kind) == ("cnn", kind)
    config = from_flat(TINY_BUDGET, example)
    tasks = build_stream(config.stream, root, config.run.seed)
    assert [t.input_shape for t in tasks] == [(3, 32, 32)] * 2
    result = run_sequence(config, tasks)
    assert [len(row) for row in result.accuracy_matrix] == [2, 2]
    assert result.accuracy_matrix[1][0] is not None and 0 <= result.accuracy_matrix[1][0] <= 1
    assert result.training[1].iterations == 3 and "generator" in result.training[1].losses
    assert result.scholar is not None
    samples = result.scholar.eval().sample(4)
    assert samples.shape == (4, 3, 32, 32) and 0 <= samples.min() and samples.max() <= 1


def test_the_cpu_budget_conv_wgan_config_trains_split_mnist(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.random.default_rng(1), 3, 2)
    example = example_config("split_mnist_conv_wgan.yaml")
    g = example.generator
    assert (g.kind, g.channels, g.learning_rate, g.iterations) == ("conv-wgan-gp", 16, 1e-3, 500)
    assert (example.solver.iterations, example.stream.scenario) == (2000, "class")
    config = from_flat(TINY_BUDGET, example)
    tasks = build_stream(config.stream, tmp_path, config.run.seed)[:2]
    result = run_sequence(config, tasks)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3)] and len(result.accuracy_matrix) == 2
    assert result.training[1].iterations == 3 and "critic" in result.training[1].losses
    assert result.scholar is not None and result.scholar.eval().sample(4).shape == (4, 1, 28, 28)


def test_the_permuted_conv_wgan_config_replays_with_soft_targets(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.random.default_rng(2), 3, 2)
    example = example_config("permuted_mnist_conv_wgan.yaml")
    g, r = example.generator, example.replay
    assert (g.kind, g.channels, g.learning_rate, g.iterations) == ("conv-wgan-gp", 16, 1e-3, 500)
    assert (r.arm, r.targets, r.temperature) == ("gr", "soft", 2.0)
    assert (example.stream.name, example.stream.scenario, example.stream.num_tasks) == ("permuted_mnist", "domain", 5)
    config = from_flat(TINY_BUDGET, example)
    tasks = build_stream(config.stream, tmp_path, config.run.seed)[:2]
    result = run_sequence(config, tasks)
    assert len(result.accuracy_matrix) == 2 and result.accuracy_matrix[1][0] is not None
    assert result.training[1].iterations == 3 and "critic" in result.training[1].losses
    assert result.scholar is not None and result.scholar.eval().sample(4).shape == (4, 1, 28, 28)
