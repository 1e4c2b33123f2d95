"""Shared fixtures: a tiny synthetic stream for unit tests and the real data root for integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dgr.config import Config, GeneratorConfig, RunConfig, SolverConfig, StreamConfig
from dgr.streams import Task

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--data-root", default=None, help="real datasets for integration tests")


@pytest.fixture(scope="session")
def real_data_root(request: pytest.FixtureRequest) -> Path:
    """--data-root, else $DGR_TEST_DATA_ROOT, else ../shared/data beside the repository."""
    given = request.config.getoption("--data-root") or os.environ.get("DGR_TEST_DATA_ROOT")
    root = Path(given) if given else REPO.parent / "shared" / "data"
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not found under {root} (set --data-root or DGR_TEST_DATA_ROOT)")
    return root


def make_tiny_stream(num_tasks: int = 3, per_class: int = 48, test_per_class: int = 16,
                     shape: tuple[int, ...] = (1, 8, 8), seed: int = 0) -> list[Task]:
    """`num_tasks` tasks of two classes; each class is a fixed random prototype plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(2 * num_tasks, *shape, generator=g)
    tasks = []
    for k in range(num_tasks):
        splits = []
        for n in (per_class, test_per_class):
            labels = torch.arange(2 * k, 2 * k + 2).repeat_interleave(n)
            noise = 0.15 * torch.randn(len(labels), *shape, generator=g)
            images = ((prototypes[labels] + noise).clamp(0, 1) * 255).to(torch.uint8)
            splits += [images, labels]
        tasks.append(Task(k, f"tiny {k}", (2 * k, 2 * k + 1), *splits))
    return tasks


@pytest.fixture
def tiny_stream() -> list[Task]:
    return make_tiny_stream()


def tiny_config(**sections: dict) -> Config:
    """Small models and budgets so a 3-task sequence trains in well under a second."""
    base = {
        "stream": StreamConfig(scenario="class"),
        "solver": SolverConfig(hidden=32, iterations=20, batch_size=16),
        "generator": GeneratorConfig(latent=8, hidden=32, iterations=20),
        "run": RunConfig(seed=3, eval_batch_size=64),
    }
    from dgr.config import ReplayConfig, from_flat

    config = Config(stream=base["stream"], solver=base["solver"], generator=base["generator"],
                    replay=ReplayConfig(), run=base["run"])
    flat = {f"{s}.{k}": v for s, values in sections.items() for k, v in values.items()}
    return from_flat(flat, config)


@pytest.fixture
def tiny() -> Config:
    return tiny_config()
