"""The main job end to end on a local Ray with 2 gloo workers: chain, registry lineage, resume, failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch
from mlflow.tracking import MlflowClient

from dgr.checkpoint import load_scholar
from pipelines import registry
from pipelines.sequence import main
from tests.pipelines.conftest import chain_args

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, configure_logging=False)
    yield
    ray.shutdown()


def _versions(chain: str = "tiny-chain") -> list:
    return sorted(MlflowClient().search_model_versions(f"name='{chain}'"), key=lambda v: int(v.version))


def _numbers(versions: list) -> list[str]:
    return [str(v.version) for v in versions]  # SQLite stores gives ints, servers strings


def _same_outputs(a, b) -> bool:
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    z = torch.randn(8, a.generator.latent, generator=torch.Generator().manual_seed(1))
    return torch.equal(a.label(x), b.label(x)) and torch.equal(a.generator.decoder(z), b.generator.decoder(z))


def test_chain_registers_one_version_per_task_with_lineage_and_resumes(
        ray_session: None, fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(chain_args(fake_data_root, workdir)) == 0
    result = json.loads((workdir / "result.json").read_text())
    assert result["registered_model"] == "tiny-chain"
    assert result["versions"] == ["1", "2", "3"]
    assert len(result["accuracy_matrix"]) == 3 and result["accuracy_matrix"][0][1:] == [None, None]
    client = MlflowClient()
    versions = _versions()
    assert _numbers(versions) == ["1", "2", "3"]
    for k, version in enumerate(versions):
        assert str(client.get_model_version_by_alias("tiny-chain", f"task-{k}").version) == str(version.version)
        assert version.tags["parent_version"] == ("none" if k == 0 else str(k))
        assert version.tags["task"] == str(k)
        assert json.loads(version.tags["test_accuracies"]) == result["accuracy_matrix"][k][:k + 1]
    # The chain's run carries its progress, task by task (what a sweep trial reports to Tune).
    chain_run = next(run for run in client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                                                       filter_string="tags.`dgr.chain` = 'tiny-chain'")
                     if "mlflow.parentRunId" not in run.data.tags)
    history = sorted(client.get_metric_history(chain_run.info.run_id, "average_accuracy_so_far"), key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1, 2]
    assert history[-1].value == pytest.approx(result["average_accuracy"])
    assert chain_run.data.metrics["average_accuracy"] == pytest.approx(result["average_accuracy"])
    # Rank 0 wrote exactly one checkpoint per task; the registry's scholar is that one.
    checkpoints = sorted(p.name for p in (workdir / "ray_results").glob("*/task-*"))
    assert checkpoints == ["task-0", "task-1", "task-2"]
    trained = load_scholar(next((workdir / "ray_results").glob("*/task-2")) / "scholar")
    assert _same_outputs(registry.load_registered_scholar("tiny-chain", 2), trained)

    capsys.readouterr()
    assert main(chain_args(fake_data_root, workdir)) == 0  # same chain, same config: nothing to do
    assert len(_versions()) == 3
    assert json.loads((workdir / "result.json").read_text())["versions"] == ["1", "2", "3"]

    assert main(chain_args(fake_data_root, workdir, "stream.num_tasks=2") + ["--restart"]) == 0
    versions = _versions()
    assert _numbers(versions) == ["1", "2", "3", "4", "5"]
    assert str(client.get_model_version_by_alias("tiny-chain", "task-0").version) == "4"
    assert versions[3].tags["parent_version"] == "none" and versions[4].tags["parent_version"] == "4"


def test_a_killed_worker_is_retried_and_each_task_still_yields_one_version(
        ray_session: None, fake_data_root: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = workdir / "killed"
    monkeypatch.setenv("DGR_FAULT_INJECTION", f"1:10:{marker}")
    assert main(chain_args(fake_data_root, workdir)) == 0
    assert marker.exists()  # rank 1 really died during task 1
    assert _numbers(_versions()) == ["1", "2", "3"]
    assert [v.tags["task"] for v in _versions()] == ["0", "1", "2"]


def test_a_chain_whose_workers_keep_dying_fails_and_marks_its_run_failed(
        ray_session: None, fake_data_root: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DGR_FAULT_INJECTION", f"1:10:{workdir / 'killed'}")
    assert main(chain_args(fake_data_root, workdir, "pipeline.max_failures=0")) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: Ray Train stopped before task 1")
    assert _numbers(_versions()) == ["1"]  # task 0 only: nothing of task 1 was registered
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                              filter_string="tags.`dgr.chain` = 'tiny-chain'")
    chain_runs = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]  # not its task runs
    assert [run.info.status for run in chain_runs] == ["FAILED"]
