"""The registry against an embedded SQLite store: lineage, resume, atomic registration, clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from dgr.checkpoint import CheckpointError, save_scholar
from dgr.config import config_hash, from_flat
from dgr.scholar import Scholar, new_scholar
from dgr.streams import TaskInfo
from pipelines import registry, tracking

pytestmark = pytest.mark.mlflow

CONFIG = from_flat({"solver.hidden": 16, "generator.hidden": 16, "generator.latent": 4})
HASH = config_hash(CONFIG)
CHAIN = "tiny-chain"


@pytest.fixture
def workdir(store_workdir: Path) -> Path:
    return store_workdir


def _scholar(seed: int) -> Scholar:
    return new_scholar(from_flat({"run.seed": seed}, CONFIG), (1, 8, 8), 6)


def _register_chain(workdir: Path, tasks: int) -> list[str]:
    experiment = tracking.ensure_experiment("dgr-test", workdir)
    parent = tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH)
    versions: list[str] = []
    for k in range(tasks):
        info = TaskInfo(k, f"tiny {k}", (2 * k, 2 * k + 1))
        row = [0.9 - 0.1 * j for j in range(k + 1)]
        run_id = tracking.start_task_run(parent, experiment, CHAIN, CONFIG, HASH, info)
        folder = save_scholar(_scholar(k), workdir / f"scholar-{k}")
        parent_version = versions[-1] if versions else None
        versions.append(registry.register_scholar(CHAIN, run_id, folder, info, parent_version, HASH, "fp", row))
    return versions


def _version_count() -> int:
    return len(MlflowClient().search_model_versions(f"name = '{CHAIN}'"))


def test_three_tasks_give_three_versions_linked_by_parent_and_alias(workdir: Path) -> None:
    versions = _register_chain(workdir, 3)
    client = MlflowClient()
    assert _version_count() == 3
    aliases = {alias: str(v) for alias, v in client.get_registered_model(CHAIN).aliases.items()}
    assert aliases == {f"task-{k}": v for k, v in enumerate(versions)}
    for k, version in enumerate(versions):
        tags = client.get_model_version(CHAIN, version).tags
        assert tags["parent_version"] == (versions[k - 1] if k else "none")
        assert tags["config_hash"] == HASH and tags["task"] == str(k)
    chain = registry.chain_tasks(CHAIN, HASH)
    assert [(t.task, t.version) for t in chain] == list(enumerate(versions))
    assert chain[2].accuracies == pytest.approx([0.9, 0.8, 0.7])
    assert (workdir / "mlartifacts").is_dir()  # not ./mlruns of the working directory


def test_scholar_loaded_by_alias_computes_what_was_saved(workdir: Path) -> None:
    _register_chain(workdir, 2)
    loaded, saved = registry.load_registered_scholar(CHAIN, 1), _scholar(1)
    x, z = torch.rand(5, 1, 8, 8), torch.randn(5, 4)
    assert torch.equal(loaded.label(x), saved.label(x))
    with torch.no_grad():
        assert torch.equal(loaded.generator.decoder(z), saved.generator.decoder(z))


def test_another_config_hash_is_refused_naming_version_and_restart(workdir: Path) -> None:
    versions = _register_chain(workdir, 1)
    with pytest.raises(registry.RegistryError, match="--restart") as error:
        registry.chain_tasks(CHAIN, "0123456789ab")
    assert f"version {versions[0]} (task 0)" in str(error.value) and "\n" not in str(error.value)


def test_clear_chain_forgets_the_tasks_but_keeps_the_versions(workdir: Path) -> None:
    assert registry.chain_tasks(CHAIN, HASH) == []
    registry.clear_chain(CHAIN)  # no model yet: nothing to do
    _register_chain(workdir, 2)
    registry.clear_chain(CHAIN)
    assert registry.chain_tasks(CHAIN, HASH) == []
    assert _version_count() == 2


def test_failing_alias_leaves_no_new_version(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _register_chain(workdir, 1)
    before = _version_count()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("store went away")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", broken)
    run_id = MlflowClient().search_runs([tracking.ensure_experiment("dgr-test", workdir)])[0].info.run_id
    info = TaskInfo(1, "tiny 1", (2, 3))
    with pytest.raises(registry.RegistryError, match="setting alias task-1"):
        registry.register_scholar(CHAIN, run_id, workdir / "scholar-0", info, "1", HASH, "fp", [0.5, 0.5])
    assert _version_count() == before


def test_registering_a_task_twice_is_refused(workdir: Path) -> None:
    _register_chain(workdir, 1)
    run_id = registry.chain_tasks(CHAIN, HASH)[0].run_id
    info = TaskInfo(0, "tiny 0", (0, 1))
    with pytest.raises(registry.RegistryError, match="already version"):
        registry.register_scholar(CHAIN, run_id, workdir / "scholar-0", info, None, HASH, "fp", [0.9])
    assert _version_count() == 1


def test_corrupt_weights_fail_as_checkpoint_error(workdir: Path) -> None:
    experiment = tracking.ensure_experiment("dgr-test", workdir)
    parent = tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH)
    folder = save_scholar(_scholar(0), workdir / "scholar")
    (folder / "weights.pt").write_bytes(b"not a zip archive")
    info = TaskInfo(0, "tiny 0", (0, 1))
    registry.register_scholar(CHAIN, parent, folder, info, None, HASH, "fp", [0.9])
    with pytest.raises(CheckpointError, match="weights.pt"):
        registry.load_registered_scholar(CHAIN, 0)


def test_missing_alias_fails_naming_the_uri(workdir: Path) -> None:
    _register_chain(workdir, 1)
    with pytest.raises(registry.RegistryError, match=f"models:/{CHAIN}@task-5"):
        registry.download_scholar(CHAIN, 5, workdir / "download")


def test_unreachable_server_fails_fast_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(registry.RegistryError, match="unreachable") as error:
        tracking.configure_tracking(tmp_path)
    assert time.monotonic() - start < 10  # a guard against MLflow's minutes of retries, not a benchmark
    assert "\n" not in str(error.value) and "MLFLOW_TRACKING_URI" in str(error.value)
