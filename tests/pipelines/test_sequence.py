"""The main job end to end on a local Ray with 2 gloo workers: chain, registry lineage, resume, failures,
and every rank on the task rank 0 was given."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dgr.streams import build_stream
from pipelines import audit
from pipelines import chain as chain_module
from pipelines.chain import WorkerHook
from pipelines.sequence import main
from pipelines.settings import load_settings
from tests.pipelines.conftest import TINY_CHAIN, chain_args
from tests.pipelines.worker_hooks import RaceGate

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


def _die_once(workdir: Path) -> WorkerHook:
    """Rank 1 dies once, at iteration 10 of task 1."""
    return WorkerHook("tests.pipelines.worker_hooks:die_once",
                      {"task": 1, "iteration": 10, "marker": str(workdir / "killed")})


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
        assert float(version.tags["privacy.nn_ratio"]) > 0  # the driver audits each version's generator
        assert version.source.startswith("models:/m-")  # an MLflow Model, which task k + 1 loaded back
    # The chain's run carries its progress, task by task (what a sweep trial reports to Tune).
    chain_run = next(run for run in client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                                                       filter_string="tags.`dgr.chain` = 'tiny-chain'")
                     if "mlflow.parentRunId" not in run.data.tags)
    history = sorted(client.get_metric_history(chain_run.info.run_id, "average_accuracy_so_far"), key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1, 2]
    assert history[-1].value == pytest.approx(result["average_accuracy"])
    assert chain_run.data.metrics["average_accuracy"] == pytest.approx(result["average_accuracy"])
    # The registry is the only checkpoint: Ray Train keeps its run state and no scholar.
    assert (workdir / "ray_results").is_dir() and not list((workdir / "ray_results").rglob("*.pt"))
    assert [len(nodes) for nodes in result["worker_nodes"]] == [2, 2, 2]
    assert result["workers"]["num_workers"] == 2
    config, _ = load_settings(None, TINY_CHAIN)
    assert audit.audit_chain_files("tiny-chain", build_stream(config.stream, fake_data_root, config.run.seed)).clean

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
        ray_session: None, fake_data_root: Path, workdir: Path) -> None:
    assert main(chain_args(fake_data_root, workdir), hook=_die_once(workdir)) == 0
    assert (workdir / "killed").exists()  # rank 1 really died during task 1
    assert _numbers(_versions()) == ["1", "2", "3"]
    assert [v.tags["task"] for v in _versions()] == ["0", "1", "2"]


def test_a_chain_whose_workers_keep_dying_fails_and_marks_its_run_failed(
        ray_session: None, fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(chain_args(fake_data_root, workdir, "pipeline.max_failures=0"), hook=_die_once(workdir)) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: Ray Train stopped before task 1")
    assert _numbers(_versions()) == ["1"]  # task 0 only: nothing of task 1 was registered
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                              filter_string="tags.`dgr.chain` = 'tiny-chain'")
    chain_runs = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]  # not its task runs
    assert [run.info.status for run in chain_runs] == ["FAILED"]


def test_the_race_gate_answers_ranks_differently() -> None:
    """Guards the test below: asking one by one, two ranks would be told different tasks."""
    async def ask_twice() -> tuple[int, int]:
        gate = RaceGate(0)
        return await gate.next_task(), await gate.next_task()

    assert asyncio.run(ask_twice()) == (0, 1)


def test_every_rank_trains_the_task_rank_0_was_given(
        ray_session: None, fake_data_root: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain_module, "TaskGate", RaceGate)
    record = WorkerHook("tests.pipelines.worker_hooks:record_task", {"folder": str(workdir)})
    assert main(chain_args(fake_data_root, workdir, "stream.num_tasks=2"), hook=record) == 0
    trained = {rank: (workdir / f"rank-{rank}").read_text().split() for rank in (0, 1)}
    assert trained == {0: ["0", "1"], 1: ["0", "1"]}
    assert [v.tags["task"] for v in _versions()] == ["0", "1"]


def _mnist_parquet(data_root: Path, base: Path) -> str:
    """MNIST as a Hub-style Parquet source (PNG records), written from the IDX files."""
    from dgr.datasets import load_mnist
    from dgr.image_files import write_parquet

    for split in ("train", "test"):
        images, labels = load_mnist(data_root, split)
        write_parquet(base / f"{split}.parquet", images.permute(0, 2, 3, 1).numpy(), labels.numpy())
    return f"parquet:{base}"


def test_mnist_from_parquet_then_svhn_with_conv_scholars_logs_validation_accuracies(
        ray_session: None, fake_data_root: Path, workdir: Path, tmp_path: Path) -> None:
    """The seed paper's MNIST -> SVHN new-domain chain at 32x32x3 (CNN solver, conv VAE), MNIST read from
    Parquet, with a validation split: one version per task, validation accuracies logged and tagged."""
    from tests.fakedata import write_svhn

    data_root = tmp_path / "data"
    data_root.mkdir()
    write_svhn(data_root, np.random.default_rng(0), per_split=40)
    sources = [_mnist_parquet(fake_data_root, tmp_path / "mnist_parquet"), "svhn"]
    args = chain_args(data_root, workdir, "stream.name=domains", f"stream.sources={','.join(sources)}",
                      "stream.image_size=32", "stream.fit=pad", "stream.channels=3", "stream.validation=0.25",
                      "solver.kind=cnn", "solver.hidden=16", "generator.kind=conv-vae", "generator.channels=4",
                      "pipeline.name=")
    assert main(args) == 0
    result = json.loads((workdir / "result.json").read_text())
    assert result["registered_model"] == "dgr-domains-mnist_parquet.svhn-domain-gr"
    versions = _versions(result["registered_model"])
    assert [v.tags["task"] for v in versions] == ["0", "1"]  # one version per source
    assert [len(json.loads(v.tags["validation_accuracies"])) for v in versions] == [1, 2]
    assert len(result["validation_matrix"]) == 2
    task_run = MlflowClient().get_run(versions[1].run_id)
    assert task_run.data.metrics["validation_accuracy"] == pytest.approx(
        sum(json.loads(versions[1].tags["validation_accuracies"])) / 2)
