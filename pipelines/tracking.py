"""Tracking with MLflow: the store, the experiment, chain, sweep and task runs, and one-line errors.

Every call goes through `MlflowClient`, so no active-run state leaks between calls. The scholar registry
(versions, aliases, downloads) is `pipelines.registry`.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
from mlflow.entities import Metric, Param, Run, ViewType
from mlflow.environment_variables import MLFLOW_TRACKING_URI
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dgr.config import Config, flatten
from dgr.streams import TaskInfo
from pipelines.credentials import masked
from pipelines.settings import CHAIN_NAME, CHAIN_NAME_RULE

PARAM_LIMIT = 6000  # characters of a param value MLflow keeps
HEALTH_TIMEOUT_S = 5.0  # MLflow's own client retries an unreachable server for minutes
ARTIFACTS_DIR = "mlartifacts"
ARTIFACT_LOCATION_ENV = "DGR_ARTIFACT_LOCATION"  # artifact root of a new experiment without a server
# MLflow's own "experiment type" tag (its UI's type selector writes it): a model-training experiment, not
# a GenAI one. MLflow 3.17's UI takes the page it opens on from its sidebar switch instead (stored in the
# browser, GenAI by default); `experiment_url` carries that switch as `workflowType`.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


class RegistryError(RuntimeError):
    """A registry or tracking operation failed; the message is one line meant for the user."""


def configure_tracking(workdir: Path, create: bool = True) -> str:
    """Point MLflow at $MLFLOW_TRACKING_URI, else at an embedded SQLite store under `workdir` (made when
    missing, unless `create` is False: a reader such as the audit needs an existing one).

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, so child processes (Ray workers) and
    later calls in this process use the same store. MLflow's INFO notes (a new store's tables, each logged
    model's input example) are noise in the driver's, trials' and workers' output: warnings only.
    """
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = MLFLOW_TRACKING_URI.get()
    if not uri:
        workdir = Path(workdir).resolve()
        if not create and not (workdir / "mlflow.db").is_file():
            raise RegistryError(f"--workdir {workdir}: no MLflow store (mlflow.db) there; give the main job's "
                                "--workdir or set MLFLOW_TRACKING_URI")
        workdir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{workdir}/mlflow.db"
    uri = _absolute_sqlite(uri)
    if uri.startswith(("http://", "https://")):
        _check_reachable(uri)
    try:
        MlflowClient(uri)  # builds its stores: an unsupported scheme fails here in one line, not later
    except Exception as exc:  # noqa: BLE001 - the URI is the user's: MLflow, SQLAlchemy, a missing driver...
        raise RegistryError(f"MLflow tracking URI {masked(uri)}: {one_line(exc)}") from None
    mlflow.set_tracking_uri(uri)
    return uri


def _absolute_sqlite(uri: str) -> str:
    """`sqlite:///mlflow.db` names a file relative to the current folder; Ray workers run in another one,
    so they get the absolute path (`sqlite:////abs/mlflow.db`)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/"):
        return uri
    path, query = uri[len(prefix):].partition("?")[::2]
    if path in ("", ":memory:"):
        return uri
    return f"{prefix}{Path(path).resolve()}" + (f"?{query}" if query else "")


def _check_reachable(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S):
            return
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:  # or a malformed URI
        reason = getattr(exc, "reason", exc)
        raise RegistryError(
            f"MLflow tracking server {masked(uri)} is unreachable: {one_line(reason)}; start one "
            "(python infra/mlflow_server.py) or unset MLFLOW_TRACKING_URI for the embedded default"
        ) from None


def _is_server(uri: str) -> bool:
    """A server has its own artifact root; a database or file store would fall back to ./mlruns."""
    return uri.split(":", 1)[0] in ("http", "https", "databricks", "databricks-uc")


def ensure_experiment(name: str, workdir: Path) -> str:
    """The experiment's id, created if missing (restored if deleted), tagged as a model-training one."""
    client = MlflowClient()
    kind, value = EXPERIMENT_KIND
    with mlflow_step(f"experiment {name}"):
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            if kind not in found.tags:  # a kind chosen in the UI stays
                client.set_experiment_tag(found.experiment_id, kind, value)
            return found.experiment_id
        location = os.environ.get(ARTIFACT_LOCATION_ENV) or None  # e.g. s3://bucket/prefix
        if location is None and not _is_server(mlflow.get_tracking_uri()):
            # Without a server, MLflow would put artifacts in ./mlruns of whatever directory we run in.
            location = (Path(workdir) / ARTIFACTS_DIR).resolve().as_uri()
        return client.create_experiment(name, artifact_location=location, tags={kind: value})


def experiment_url(tracking_uri: str, experiment_id: str) -> str | None:
    """The experiment's runs in the MLflow UI (None without a server), opened as a training experiment."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{masked(tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def start_chain_run(chain: str, experiment_id: str, config: Config, config_hash: str,
                    parent_run_id: str | None = None, restart: bool = False) -> str:
    """The chain's parent run, RUNNING: its newest run found again by its tags on resume (and set running
    again), or a new one (with params) for a new chain or a `--restart`.

    A sweep's trials nest their chain runs under the sweep's run (`parent_run_id`).
    """
    client = MlflowClient()
    with mlflow_step(f"chain run {checked_name(chain)}-{config_hash}"):
        found = [] if restart else _chain_runs(client, experiment_id, chain,
                                               f"tags.`dgr.config_hash` = '{config_hash}'")
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        tags = {"dgr.chain": chain, "dgr.config_hash": config_hash}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=f"{chain}-{config_hash}", tags=tags)
        params = [Param(key, str(value)) for key, value in flatten(config).items()]
        client.log_batch(run.info.run_id, params=params)
        return run.info.run_id


def _chain_runs(client: MlflowClient, experiment_id: str, chain: str, condition: str,
                tasks: bool = False) -> list[Run]:
    """`chain`'s chain runs meeting `condition`, newest first, and its task runs (same chain tag) if `tasks`."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`dgr.chain` = '{chain}' and {condition}",
                              run_view_type=ViewType.ACTIVE_ONLY, order_by=["attributes.start_time DESC"])
    return [run for run in runs if tasks or "dgr.task" not in run.data.tags]


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Metrics on an existing run, e.g. a chain's average accuracy so far after each task (step = task)."""
    now = int(time.time() * 1000)
    with mlflow_step(f"logging metrics of run {run_id}"):
        MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def find_sweep_run(experiment_id: str, name: str) -> Run | None:
    """The sweep's parent run of an earlier start of the sweep `name`, if any."""
    with mlflow_step(f"sweep run {name}"):
        found = MlflowClient().search_runs([experiment_id], filter_string=f"tags.`dgr.sweep` = '{name}'",
                                           run_view_type=ViewType.ACTIVE_ONLY, max_results=1)
    return found[0] if found else None


def start_sweep_run(experiment_id: str, name: str, params: dict[str, str]) -> str:
    """The sweep's parent run, RUNNING: found again by name on resume (a restored sweep logs into it
    again, and sets it running again), or a new one."""
    client = MlflowClient()
    found = find_sweep_run(experiment_id, name)
    with mlflow_step(f"sweep run {name}"):
        if found:
            client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id
        run = client.create_run(experiment_id, run_name=name, tags={"dgr.sweep": name})
        client.log_batch(run.info.run_id, params=[Param(k, v[:PARAM_LIMIT]) for k, v in params.items()])
        return run.info.run_id


def finish_run(run_id: str, artifacts: dict[str, Path] | None = None, tags: dict[str, str] | None = None) -> None:
    client = MlflowClient()
    with mlflow_step(f"finishing run {run_id}"):
        for path in (artifacts or {}).values():
            client.log_artifact(run_id, str(path))
        for key, value in (tags or {}).items():
            client.set_tag(run_id, key, value)
        client.set_terminated(run_id, "FINISHED")


def end_run(run_id: str, status: str) -> None:
    """End a run as FINISHED, or FAILED / KILLED for one whose work stopped early."""
    with mlflow_step(f"ending run {run_id}"):
        MlflowClient().set_terminated(run_id, status)


def finish_chain_run(run_id: str, average_accuracy: float | None = None, status: str = "FINISHED",
                     step: int = 0) -> None:
    """Log the chain's final average accuracy at `step` (its last task) and end its run (FINISHED, or
    KILLED / FAILED for a chain that stopped early); a resume logs into it again."""
    if average_accuracy is not None:
        log_metrics(run_id, {"average_accuracy": average_accuracy}, step)
    end_run(run_id, status)


def close_open_chain_run(experiment_id: str, chain: str, status: str, average_accuracy: float | None = None,
                         step: int = 0) -> None:
    """End `chain`'s run as `finish_chain_run` would if it is still RUNNING (its process was ended first),
    and any task run it left open as KILLED."""
    client = MlflowClient()
    with mlflow_step(f"closing chain run of {checked_name(chain)}"):
        open_runs = _chain_runs(client, experiment_id, chain, "attributes.status = 'RUNNING'", tasks=True)
    for run in open_runs:
        if "dgr.task" in run.data.tags:
            end_run(run.info.run_id, "KILLED")
        else:
            finish_chain_run(run.info.run_id, average_accuracy, status, step)


def close_open_trial_runs(experiment_id: str, sweep_run_id: str) -> None:
    """End every chain run nested under the sweep's run that is still RUNNING as KILLED, with the task runs
    it left open: a sweep that stops early ends its trials' processes before their chains end their runs."""
    client = MlflowClient()
    with mlflow_step("closing the trials' chain runs"):
        open_runs = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{sweep_run_id}' "
                                       "and attributes.status = 'RUNNING'")
    for run in open_runs:
        close_open_chain_run(experiment_id, run.data.tags["dgr.chain"], "KILLED")


def start_task_run(parent_run_id: str, experiment_id: str, chain: str, config: Config, config_hash: str,
                   task: TaskInfo) -> str:
    """A RUNNING nested run for one task, opened before its workers train it: its params are the task
    and the chain's config, so the run spans the task's training and compares with its siblings."""
    client = MlflowClient()
    tags = {"mlflow.parentRunId": parent_run_id, "dgr.chain": chain, "dgr.config_hash": config_hash,
            "dgr.task": str(task.index), "dgr.task_name": task.name}
    replayed = task.index > 0 and config.replay.arm != "none"
    params = {**flatten(config), "task.index": task.index, "task.name": task.name,
              "task.replay_ratio": config.replay.weight(task.index + 1) if replayed else 1.0}
    with mlflow_step(f"creating the run of task {task.index}"):
        run_id = client.create_run(experiment_id, run_name=f"{checked_name(chain)}-task-{task.index}",
                                   tags=tags).info.run_id
        client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
    return run_id


def log_losses(run_id: str, losses: dict[str, float], iteration: int) -> None:
    """A point of the task's loss curves (`loss_solver`, `loss_generator`, ...) at step = iteration."""
    log_metrics(run_id, {f"loss_{name}": value for name, value in losses.items()}, iteration)


def log_task(run_id: str, task: TaskInfo, metrics: dict[str, float], accuracy_row: list[float],
             artifacts: dict[str, Path]) -> None:
    """A trained task's results on its run, at step = task index: its training statistics, its accuracy
    row and its figures. Its losses are curves the workers logged at their iterations already."""
    values = {k: v for k, v in metrics.items() if not k.startswith("loss_") and k not in ("task", "rank")}
    values.update({f"acc_task_{j}": a for j, a in enumerate(accuracy_row)})
    if accuracy_row:
        values["average_accuracy"] = sum(accuracy_row) / len(accuracy_row)
    log_metrics(run_id, values, task.index)
    with mlflow_step(f"logging the figures of task {task.index}"):
        for path in artifacts.values():
            MlflowClient().log_artifact(run_id, str(path))


def checked_name(chain: str) -> str:
    if not CHAIN_NAME.fullmatch(chain):
        raise RegistryError(f"chain name {chain!r}: expected {CHAIN_NAME_RULE}")
    return chain


@contextmanager
def mlflow_step(description: str) -> Iterator[None]:
    """Turn MLflow's multi-line errors into one RegistryError line naming what we were doing."""
    try:
        yield
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"{description}: {one_line(exc)}") from None


def one_line(exc: object) -> str:
    return " ".join(str(exc).split())[:300]
