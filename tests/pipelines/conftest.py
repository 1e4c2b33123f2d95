"""Fixtures for pipeline tests: a tiny MNIST data root and a chain config that trains in seconds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.fakedata import write_mnist

# Permuted MNIST on 200 fake images per task with tiny models: 3 tasks in a few seconds of training.
TINY_CHAIN = [
    "stream.name=permuted_mnist", "stream.scenario=domain", "stream.num_tasks=3",
    "solver.hidden=32", "solver.iterations=30", "solver.batch_size=32",
    "generator.hidden=32", "generator.latent=8", "generator.iterations=30",
    "run.device=cpu", "run.eval_batch_size=200",
    "pipeline.num_workers=2", "pipeline.name=tiny-chain",
]


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, np.random.default_rng(0), train_per_digit=20, test_per_digit=10)
    return root


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory with the embedded MLflow default (no tracking URI from outside)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    _forget_store()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty mlflow.db: creating one takes seconds, copying it milliseconds."""
    from mlflow.tracking import MlflowClient

    from pipelines import tracking

    folder = tmp_path_factory.mktemp("template")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        tracking.configure_tracking(folder)
        MlflowClient().search_experiments()
        _forget_store()
    return folder / "mlflow.db"


@pytest.fixture
def store_workdir(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory whose embedded MLflow store (a copy of `empty_store`) is the current one."""
    from pipelines import tracking

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.configure_tracking(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    yield tmp_path
    _forget_store()


def _forget_store() -> None:
    import mlflow

    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI into os.environ, and monkeypatch does not undo
    # a variable it found absent: forget the test's store so later tests and their subprocesses do not.
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def chain_args(data_root: Path, workdir: Path, *extra: str) -> list[str]:
    args = ["--data-root", str(data_root), "--workdir", str(workdir), "--json", str(workdir / "result.json")]
    for item in [*TINY_CHAIN, *extra]:
        args += ["--set", item]
    return args


def tiny_sweep_sets(*extra: str) -> list[str]:
    """`--set` arguments of a sweep over the tiny chain (each trial names its own chain; a sweep selects on
    validation data, so each task holds a quarter of its training images out)."""
    args = []
    for item in [*TINY_CHAIN, "stream.validation=0.25", *extra]:
        if not item.startswith("pipeline.name"):
            args += ["--set", item]
    return args


def stored_scholar_file(chain: str, task: int, name: str) -> Path:
    """The file `name` (spec.json, weights.pt) of alias task-`task`'s scholar in a local artifact store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    model_id = client.get_model_version_by_alias(chain, f"task-{task}").source.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    return Path(location.removeprefix("file://")) / "artifacts" / "scholar" / name
