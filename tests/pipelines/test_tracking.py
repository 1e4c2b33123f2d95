"""Runs against an embedded SQLite store: the experiment's kind, chain runs on resume and restart, task
runs that span their training with params, loss curves and metrics at the steps they belong to."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from dgr.config import config_hash, from_flat
from dgr.streams import TaskInfo
from pipelines import tracking

pytestmark = pytest.mark.mlflow

CONFIG = from_flat({"solver.hidden": 16, "replay.ratio": 0.25})
HASH = config_hash(CONFIG)
CHAIN = "tiny-chain"
KIND, MODEL_TRAINING = tracking.EXPERIMENT_KIND


def _steps(run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))


def test_experiment_is_a_model_training_one_new_or_existing(store_workdir: Path) -> None:
    client = MlflowClient()
    created = tracking.ensure_experiment("dgr-test", store_workdir)
    assert client.get_experiment(created).tags[KIND] == MODEL_TRAINING
    older = client.create_experiment("dgr-older")  # made before the tag existed
    assert tracking.ensure_experiment("dgr-older", store_workdir) == older
    assert client.get_experiment(older).tags[KIND] == MODEL_TRAINING
    client.set_experiment_tag(older, KIND, "genai_development")  # the user's choice in the UI stays
    tracking.ensure_experiment("dgr-older", store_workdir)
    assert client.get_experiment(older).tags[KIND] == "genai_development"


def test_experiment_url_opens_the_runs_of_a_server_only() -> None:
    assert tracking.experiment_url("http://127.0.0.1:5000/", "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert tracking.experiment_url("sqlite:///tmp/mlflow.db", "7") is None


def test_resume_reopens_the_newest_chain_run_and_restart_starts_a_new_one(store_workdir: Path) -> None:
    client = MlflowClient()
    experiment = tracking.ensure_experiment("dgr-test", store_workdir)
    first = tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH)
    run = client.get_run(first)
    assert run.info.run_name == f"{CHAIN}-{HASH}" and run.data.params["solver.hidden"] == "16"
    assert mlflow.active_run() is None
    tracking.start_task_run(first, experiment, CHAIN, CONFIG, HASH, TaskInfo(0, "tiny 0", (0, 1)))
    assert tracking.start_chain_run(CHAIN, experiment, CONFIG, "0123456789ab") != first
    tracking.finish_chain_run(first, 0.75, step=2)
    assert client.get_run(first).info.status == "FINISHED"
    assert tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH) == first  # not its newer task run
    assert client.get_run(first).info.status == "RUNNING"  # while the resumed chain trains
    tracking.finish_chain_run(first, status="KILLED")
    restarted = tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH, restart=True)
    assert restarted != first and client.get_run(restarted).info.status == "RUNNING"
    assert tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH) == restarted  # the newest chain
    assert client.get_run(first).info.status == "KILLED"
    assert _steps(first, "average_accuracy") == [(2, 0.75)]  # at the chain's last task, not step 0


def test_a_task_run_spans_its_training_with_params_curves_and_results(store_workdir: Path) -> None:
    client = MlflowClient()
    experiment = tracking.ensure_experiment("dgr-test", store_workdir)
    parent = tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH)
    run_id = tracking.start_task_run(parent, experiment, CHAIN, CONFIG, HASH, TaskInfo(1, "tiny 1", (2, 3)))
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.run_name == f"{CHAIN}-task-1"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["dgr.task"] == "1"
    assert {k: run.data.params[k] for k in ("task.index", "task.name", "task.replay_ratio", "solver.hidden")} == \
        {"task.index": "1", "task.name": "tiny 1", "task.replay_ratio": "0.25", "solver.hidden": "16"}
    for iteration in (10, 20, 25):
        tracking.log_losses(run_id, {"solver": 1.0 / iteration, "generator": 2.0}, iteration)
    figure = store_workdir / "samples.png"
    figure.write_bytes(b"\x89PNG")
    tracking.log_task(run_id, TaskInfo(1, "tiny 1", (2, 3)),
                      {"task": 1, "rank": 0, "train_seconds": 3.0, "loss_solver": 0.04}, [0.8, 0.6],
                      {"samples.png": figure})
    tracking.end_run(run_id, "FINISHED")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time >= run.info.start_time
    assert [step for step, _ in _steps(run_id, "loss_solver")] == [10, 20, 25]  # no point from the driver
    assert [step for step, _ in _steps(run_id, "loss_generator")] == [10, 20, 25]
    assert _steps(run_id, "acc_task_1") == [(1, pytest.approx(0.6))]  # at the task's index
    assert _steps(run_id, "average_accuracy") == [(1, pytest.approx(0.7))]
    assert "rank" not in run.data.metrics and "task" not in run.data.metrics
    assert [f.path for f in client.list_artifacts(run_id)] == ["samples.png"]


def test_the_first_task_and_a_run_without_replay_weigh_the_new_task_fully(store_workdir: Path) -> None:
    experiment = tracking.ensure_experiment("dgr-test", store_workdir)
    parent = tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH)
    first = tracking.start_task_run(parent, experiment, CHAIN, CONFIG, HASH, TaskInfo(0, "tiny 0", (0, 1)))
    none = from_flat({"replay.arm": "none"}, CONFIG)
    later = tracking.start_task_run(parent, experiment, CHAIN, none, HASH, TaskInfo(2, "tiny 2", (4, 5)))
    assert [MlflowClient().get_run(r).data.params["task.replay_ratio"] for r in (first, later)] == ["1.0", "1.0"]


def test_closing_a_trial_chain_ends_its_open_runs(store_workdir: Path) -> None:
    client = MlflowClient()
    experiment = tracking.ensure_experiment("dgr-test", store_workdir)
    parent = tracking.start_chain_run(CHAIN, experiment, CONFIG, HASH)
    task = tracking.start_task_run(parent, experiment, CHAIN, CONFIG, HASH, TaskInfo(0, "tiny 0", (0, 1)))
    tracking.close_open_chain_run(experiment, CHAIN, "FINISHED", 0.5, step=0)
    assert client.get_run(task).info.status == "KILLED"
    assert client.get_run(parent).info.status == "FINISHED" and _steps(parent, "average_accuracy") == [(0, 0.5)]


def test_a_relative_sqlite_uri_reaches_the_workers_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray workers run in another folder: `sqlite:///mlflow.db` would be another store there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///stores/mlflow.db")
    (tmp_path / "stores").mkdir()
    try:
        uri = tracking.configure_tracking(tmp_path / "unused")
        assert uri == f"sqlite:///{tmp_path.resolve()}/stores/mlflow.db"
        assert mlflow.get_tracking_uri() == uri and os.environ["MLFLOW_TRACKING_URI"] == uri
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_mlflow_notes_stay_out_of_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capfd: pytest.CaptureFixture) -> None:
    """A new store's "Creating initial MLflow database tables..." (and each logged model's input-example
    note) reached the sweep's and its trials' output as INFO lines; MLflow's warnings still show."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logger = logging.getLogger("mlflow")
    monkeypatch.setattr(logger, "level", logging.INFO)  # as a fresh process has it, whatever ran before
    tracking.configure_tracking(tmp_path / "new")
    assert (tmp_path / "new" / "mlflow.db").is_file()
    assert capfd.readouterr().err == "" and logger.getEffectiveLevel() == logging.WARNING
