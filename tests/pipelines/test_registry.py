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
from tests.pipelines.conftest import stored_scholar_file

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
        info = _info(k)
        row = [0.9 - 0.1 * j for j in range(k + 1)]
        run_id = tracking.start_task_run(parent, experiment, CHAIN, CONFIG, HASH, info)
        versions.append(registry.register_scholar(CHAIN, run_id, _scholar(k), _facts(k, row, versions)))
    return versions


def _info(k: int) -> TaskInfo:
    return TaskInfo(k, f"tiny {k}", (2 * k, 2 * k + 1))


def _facts(k: int, accuracies: list[float], versions: list[str], digest: str = HASH) -> registry.VersionFacts:
    return registry.VersionFacts(tuple(_info(j) for j in range(k + 1)), "tiny", "class", "gr", digest, "fp",
                                 accuracies, versions[-1] if versions else None)


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


def test_versions_describe_their_parent_and_accuracies_and_the_chain_is_tagged(workdir: Path) -> None:
    versions = _register_chain(workdir, 2)
    client = MlflowClient()
    assert client.get_registered_model(CHAIN).tags == {"stream": "tiny", "scenario": "class", "arm": "gr",
                                                       "config_hash": HASH}
    first, second = (client.get_model_version(CHAIN, v) for v in versions)
    assert "parent: none" in first.description and "task 0 0.9000" in first.description
    assert f"parent: version {versions[0]}, alias task-0" in second.description
    assert "task 0 0.9000, task 1 0.8000 (average 0.8500)" in second.description
    assert second.source.startswith("models:/m-") and second.run_id  # the logged model of the task's run
    assert client.get_logged_model(second.source.removeprefix("models:/")).source_run_id == second.run_id


@pytest.mark.parametrize("tag, value, expected", [
    ("task", "one", "the task number 1"),
    ("test_accuracies", "[0.9, oops]", "a JSON list of numbers"),
    ("test_accuracies", '{"a": 1}', "a JSON list of numbers"),
    ("test_accuracies", '[0.9, "0.8"]', "a JSON list of numbers"),
])
def test_a_corrupt_version_tag_is_named(workdir: Path, tag: str, value: str, expected: str) -> None:
    versions = _register_chain(workdir, 2)
    MlflowClient().set_model_version_tag(CHAIN, versions[1], tag, value)
    with pytest.raises(registry.RegistryError) as error:
        registry.chain_tasks(CHAIN, HASH)
    message = str(error.value)
    assert f"registered model {CHAIN}: version {versions[1]} (alias task-1) has tag {tag}=" in message
    assert expected in message and "\n" not in message


def test_a_gap_in_the_task_aliases_names_the_missing_alias(workdir: Path) -> None:
    versions = _register_chain(workdir, 2)
    client = MlflowClient()
    client.delete_registered_model_alias(CHAIN, "task-1")
    client.set_registered_model_alias(CHAIN, "task-2", versions[1])
    with pytest.raises(registry.RegistryError, match="has aliases task-0, task-2 but no task-1"):
        registry.chain_tasks(CHAIN, HASH)


def test_scholar_loaded_by_alias_computes_what_was_saved(workdir: Path) -> None:
    _register_chain(workdir, 2)
    loaded, saved = registry.load_scholar(f"models:/{CHAIN}@task-1"), _scholar(1)
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(loaded.label(x), saved.label(x))
    assert torch.equal(loaded.sample(5, torch.Generator().manual_seed(1)),
                       saved.sample(5, torch.Generator().manual_seed(1)))


def test_a_version_registered_as_a_bare_folder_still_loads(workdir: Path) -> None:
    """Chains registered before versions were MLflow Models resume: their scholar is spec.json + weights.pt."""
    experiment = tracking.ensure_experiment("dgr-test", workdir)
    run_id = tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH)
    client = MlflowClient()
    client.log_artifacts(run_id, str(save_scholar(_scholar(3), workdir / "scholar")), "scholar")
    client.create_registered_model(CHAIN)
    source = f"{client.get_run(run_id).info.artifact_uri}/scholar"
    version = client.create_model_version(CHAIN, source=source, run_id=run_id, tags={"task": "0"}).version
    client.set_registered_model_alias(CHAIN, "task-0", str(version))
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(registry.load_registered_scholar(CHAIN, 0).label(x), _scholar(3).label(x))


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
    with pytest.raises(registry.RegistryError, match="setting alias task-1"):
        registry.register_scholar(CHAIN, run_id, _scholar(1), _facts(1, [0.5, 0.5], ["1"]))
    assert _version_count() == before


def test_registering_a_task_twice_is_refused(workdir: Path) -> None:
    _register_chain(workdir, 1)
    run_id = registry.chain_tasks(CHAIN, HASH)[0].run_id
    with pytest.raises(registry.RegistryError, match="already version"):
        registry.register_scholar(CHAIN, run_id, _scholar(0), _facts(0, [0.9], []))
    assert _version_count() == 1


@pytest.mark.parametrize("name, content, complaint", [
    ("weights.pt", b"not a zip archive", "corrupt scholar weights weights.pt"),
    ("spec.json", b"{not json", "corrupt scholar spec spec.json"),
])
def test_a_corrupt_registered_scholar_is_named_by_its_model_uri(
        workdir: Path, name: str, content: bytes, complaint: str) -> None:
    _register_chain(workdir, 1)
    stored_scholar_file(CHAIN, 0, name).write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        registry.load_registered_scholar(CHAIN, 0)
    message = str(error.value)
    assert message.startswith(complaint) and f"of models:/{CHAIN}@task-0" in message
    assert "/tmp" not in message and "\n" not in message  # no download folder


def test_missing_alias_fails_naming_the_uri(workdir: Path) -> None:
    _register_chain(workdir, 1)
    with pytest.raises(registry.RegistryError, match=f"models:/{CHAIN}@task-5"):
        registry.load_registered_scholar(CHAIN, 5)


def test_unreachable_server_fails_fast_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(registry.RegistryError, match="unreachable") as error:
        tracking.configure_tracking(tmp_path)
    assert time.monotonic() - start < 10  # a guard against MLflow's minutes of retries, not a benchmark
    assert "\n" not in str(error.value) and "MLFLOW_TRACKING_URI" in str(error.value)
