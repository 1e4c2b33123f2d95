"""The main job end to end on a local Ray with 2 gloo workers: chain, registry lineage, resume, failures,
and every rank on the task rank 0 was given."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from dgr.generators import WGANGP
from dgr.streams import build_stream
from pipelines import audit
from pipelines import chain as chain_module
from pipelines.chain import WorkerHook
from pipelines.registry import load_registered_scholar
from pipelines.sequence import main
from pipelines.settings import load_settings
from tests.pipelines.conftest import TINY_CHAIN, chain_args
from tests.pipelines.worker_hooks import RaceGate

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]
SECRET = "secret-value-that-must-not-leak"


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


def _chain_runs(client: MlflowClient) -> list:
    runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                              filter_string="tags.`dgr.chain` = 'tiny-chain'", order_by=["attributes.start_time"])
    return [run for run in runs if "dgr.task" not in run.data.tags]  # not its task runs


def _check_task_runs(client: MlflowClient, chain_run: str) -> None:
    """Each task's run spans its training: opened before the first loss point, ended after the last,
    with the task's params, a loss curve at every 10 iterations and its accuracies at the task's step."""
    task_runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                                   filter_string=f"tags.`mlflow.parentRunId` = '{chain_run}'")
    task_runs.sort(key=lambda run: int(run.data.params["task.index"]))
    assert [run.data.params["task.index"] for run in task_runs] == ["0", "1", "2"]
    for k, run in enumerate(task_runs):
        assert run.info.status == "FINISHED" and run.data.params["task.name"] == f"permuted mnist {k}"
        assert run.data.params["task.replay_ratio"] == str(1.0 / (k + 1)) and run.data.params["solver.hidden"] == "32"
        losses = client.get_metric_history(run.info.run_id, "loss_solver")
        assert sorted(m.step for m in losses) == [10, 20, 30]
        assert run.info.start_time <= min(m.timestamp for m in losses)
        assert max(m.timestamp for m in losses) <= run.info.end_time
        assert [m.step for m in client.get_metric_history(run.info.run_id, f"acc_task_{k}")] == [k]


def _check_no_secret(client: MlflowClient, printed: str) -> None:
    """The driver's secrets are in no run's params or tags, no version's tags, no output, no Ray log."""
    import ray

    assert SECRET not in printed
    for run in client.search_runs([client.get_experiment_by_name("dgr").experiment_id]):
        assert SECRET not in json.dumps([run.data.params, run.data.tags])
    assert not [v for v in _versions() if SECRET in json.dumps(v.tags)]
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # runtime envs are logged there
    assert not [f for f in logs.rglob("*") if f.is_file() and SECRET in f.read_text(errors="replace")]


def test_chain_registers_one_version_per_task_with_lineage_and_resumes(
        ray_session: None, fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, SECRET)
    assert main(chain_args(fake_data_root, workdir, "pipeline.log_every=10")) == 0
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
    assert client.get_experiment_by_name("dgr").tags["mlflow.experimentKind"] == "custom_model_development"
    [chain_run] = _chain_runs(client)
    history = sorted(client.get_metric_history(chain_run.info.run_id, "average_accuracy_so_far"), key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1, 2]
    assert history[-1].value == pytest.approx(result["average_accuracy"])
    [final] = client.get_metric_history(chain_run.info.run_id, "average_accuracy")
    assert final.step == 2 and final.value == pytest.approx(result["average_accuracy"])
    _check_task_runs(client, chain_run.info.run_id)
    # The registry is the only checkpoint: Ray Train keeps its run state and no scholar.
    assert (workdir / "ray_results").is_dir() and not list((workdir / "ray_results").rglob("*.pt"))
    assert [len(nodes) for nodes in result["worker_nodes"]] == [2, 2, 2]
    assert result["workers"]["num_workers"] == 2
    config, _ = load_settings(None, TINY_CHAIN)
    assert audit.audit_chain_files("tiny-chain", build_stream(config.stream, fake_data_root, config.run.seed)).clean

    _check_no_secret(client, "".join(capsys.readouterr()))
    seen = []  # the resumed chain run's status while the chain goes over its tasks
    assert main(chain_args(fake_data_root, workdir),  # same chain, same config: nothing to do
                on_task=lambda k, matrix, validation: seen.append(client.get_run(chain_run.info.run_id).info.status)) == 0
    assert seen == ["RUNNING"] * 3 and client.get_run(chain_run.info.run_id).info.status == "FINISHED"
    assert len(_versions()) == 3
    assert json.loads((workdir / "result.json").read_text())["versions"] == ["1", "2", "3"]

    assert main(chain_args(fake_data_root, workdir) + ["--restart"]) == 0  # same config: a new chain and run
    versions = _versions()
    assert _numbers(versions) == ["1", "2", "3", "4", "5", "6"]
    assert str(client.get_model_version_by_alias("tiny-chain", "task-0").version) == "4"
    assert versions[3].tags["parent_version"] == "none" and versions[4].tags["parent_version"] == "4"
    assert [run.info.run_id for run in _chain_runs(client)][0] == chain_run.info.run_id
    assert [run.info.status for run in _chain_runs(client)] == ["FINISHED", "FINISHED"]


def test_a_killed_worker_is_retried_and_each_task_still_yields_one_version(
        ray_session: None, fake_data_root: Path, workdir: Path) -> None:
    """With the workers running ahead: rank 1 dies in task 1 while the driver may still be registering task
    0; the new worker group starts once task 0 is registered, from that version."""
    assert main(chain_args(fake_data_root, workdir, "pipeline.run_ahead=true"), hook=_die_once(workdir)) == 0
    assert (workdir / "killed").exists()  # rank 1 really died during task 1
    assert _numbers(_versions()) == ["1", "2", "3"]
    assert [v.tags["task"] for v in _versions()] == ["0", "1", "2"]
    assert [v.tags.get("parent_version") for v in _versions()[1:]] == ["1", "2"]


def test_a_chain_whose_workers_keep_dying_fails_and_marks_its_run_failed(
        ray_session: None, fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(chain_args(fake_data_root, workdir, "pipeline.max_failures=0"), hook=_die_once(workdir)) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: Ray Train stopped before task 1")
    assert _numbers(_versions()) == ["1"]  # task 0 only: nothing of task 1 was registered
    client = MlflowClient()
    assert [run.info.status for run in _chain_runs(client)] == ["FAILED"]
    task_runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                                   filter_string="tags.`dgr.task` = '1'")
    assert [run.info.status for run in task_runs] == ["FAILED"]  # the task that crashed


def test_the_race_gate_answers_ranks_differently() -> None:
    """Guards the test below: asking one by one, two ranks would be told different tasks."""
    async def ask_twice() -> tuple[int, int]:
        gate = RaceGate(0)
        return await gate.next_task(), await gate.next_task()

    assert asyncio.run(ask_twice()) == (0, 1)


def _register_once_the_next_task_trains(register):
    """`_register_task` that first waits (at most 2 min) for the next task's first loss point: it returns
    only if the workers train task k+1 while the driver registers task k."""
    def registering(chain, task, run_id, scholar, metrics):
        if task.index + 1 < len(chain.tasks):
            client, deadline = MlflowClient(), time.monotonic() + 120
            query = f"tags.`mlflow.parentRunId` = '{chain.run_id}' and tags.`dgr.task` = '{task.index + 1}'"
            while not any(client.get_metric_history(run.info.run_id, "loss_solver")
                          for run in client.search_runs([chain.experiment], filter_string=query)):
                assert time.monotonic() < deadline, f"task {task.index + 1} did not start before {task.index} was registered"
                time.sleep(0.2)
        return register(chain, task, run_id, scholar, metrics)
    return registering


def test_every_rank_trains_the_task_rank_0_was_given_while_the_driver_registers_the_last(
        ray_session: None, fake_data_root: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain_module, "TaskGate", RaceGate)
    monkeypatch.setattr(chain_module, "_register_task", _register_once_the_next_task_trains(chain_module._register_task))
    record = WorkerHook("tests.pipelines.worker_hooks:record_task", {"folder": str(workdir)})
    # run ahead although the workers take both CPUs of this Ray (auto would not)
    assert main(chain_args(fake_data_root, workdir, "stream.num_tasks=2", "pipeline.run_ahead=true"), hook=record) == 0
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
    """The seed paper's MNIST -> SVHN new-domain chain at 32x32x3 with its generator (CNN solver, conv
    WGAN-GP: the DDP-wrapped critic and batch-norm generator in the workers), MNIST read from Parquet, with
    a validation split: one version per task, validation accuracies logged and tagged, and the registered
    scholar a conv WGAN-GP that samples 32x32x3 images. (The conv VAE goes through the same VAE trainer as
    every other chain test's generator; `tests/dgr/test_new_domains_conv.py` runs it on this stream.)"""
    from tests.fakedata import write_svhn

    data_root = tmp_path / "data"
    data_root.mkdir()
    write_svhn(data_root, np.random.default_rng(0), per_split=40)
    sources = [_mnist_parquet(fake_data_root, tmp_path / "mnist_parquet"), "svhn"]
    # num_tasks back at its default: a domains stream has one task per source, and takes no count
    args = chain_args(data_root, workdir, "stream.name=domains", "stream.num_tasks=5",
                      f"stream.sources={','.join(sources)}", "stream.image_size=32", "stream.fit=pad",
                      "stream.channels=3", "stream.validation=0.25",
                      "solver.kind=cnn", "solver.hidden=16", "generator.kind=conv-wgan-gp", "generator.channels=4",
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
    scholar = load_registered_scholar(result["registered_model"], 1)
    assert isinstance(scholar.generator, WGANGP)
    assert scholar.sample(2, torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)
