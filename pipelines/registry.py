"""The one module that talks to MLflow: tracking store, chain runs, task runs and the scholar registry.

A chain is one registered model named after the sequence (`--name`); version k holds the scholar trained
on task k and is reached by the alias `task-k` (MLflow reserves `latest` and `v<digits>`). Scholars are
logged as plain artifacts (spec.json + weights.pt, see `dgr.checkpoint`) and versions are created from
the run's artifact URI: `mlflow.register_model` only accepts logged models, and a pickled pyfunc would
load arbitrary code. Every call goes through `MlflowClient`, so no active-run state leaks between calls.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import torch
from mlflow.entities import Metric, Param, ViewType
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.environment_variables import MLFLOW_TRACKING_URI
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dgr.checkpoint import load_scholar
from dgr.config import Config, flatten
from dgr.scholar import Scholar
from dgr.streams import TaskInfo

HEALTH_TIMEOUT_S = 5.0  # MLflow's own client retries an unreachable server for minutes
ARTIFACTS_DIR = "mlartifacts"
ARTIFACT_LOCATION_ENV = "DGR_ARTIFACT_LOCATION"  # artifact root of a new experiment without a server
SCHOLAR_PATH = "scholar"
NONE_PARENT = "none"
_CHAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # safe inside search filters and model URIs


class RegistryError(RuntimeError):
    """A registry or tracking operation failed; the message is one line meant for the user."""


@dataclass(frozen=True)
class RegisteredTask:
    task: int
    version: str
    run_id: str
    accuracies: list[float]
    config_hash: str


def configure_tracking(workdir: Path) -> str:
    """Point MLflow at $MLFLOW_TRACKING_URI, else at an embedded SQLite store under `workdir`.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, so child processes (Ray workers) and
    later calls in this process use the same store.
    """
    uri = MLFLOW_TRACKING_URI.get()
    if not uri:
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{workdir}/mlflow.db"
    if uri.startswith(("http://", "https://")):
        _check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def _check_reachable(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S):
            return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(
            f"MLflow tracking server {uri} is unreachable: {_one_line(reason)}; start one "
            "(python infra/mlflow_server.py) or unset MLFLOW_TRACKING_URI for the embedded default"
        ) from None


def _is_server(uri: str) -> bool:
    """A server has its own artifact root; a database or file store would fall back to ./mlruns."""
    return uri.split(":", 1)[0] in ("http", "https", "databricks", "databricks-uc")


def ensure_experiment(name: str, workdir: Path) -> str:
    """The experiment's id, created if missing (restored if deleted)."""
    client = MlflowClient()
    with _step(f"experiment {name}"):
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = os.environ.get(ARTIFACT_LOCATION_ENV) or None  # e.g. s3://bucket/prefix
        if location is None and not _is_server(mlflow.get_tracking_uri()):
            # Without a server, MLflow would put artifacts in ./mlruns of whatever directory we run in.
            location = (Path(workdir) / ARTIFACTS_DIR).resolve().as_uri()
        return client.create_experiment(name, artifact_location=location)


def chain_tasks(chain: str, config_hash: str) -> list[RegisteredTask]:
    """The versions aliased task-0, task-1, ... up to the first missing alias, in task order."""
    client = MlflowClient()
    with _step(f"reading registered model {_checked(chain)}"):
        model = _registered_model(client, chain)
        if model is None:
            return []
        tasks = []
        while (version := model.aliases.get(f"task-{len(tasks)}")) is not None:
            tasks.append(_registered_task(client.get_model_version(chain, str(version))))
    for done in tasks:
        if done.config_hash != config_hash:
            raise RegistryError(
                f"registered model {chain}: version {done.version} (task {done.task}) was trained with "
                f"config hash {done.config_hash}, this run has {config_hash}; rerun with --restart to "
                "start a new chain or choose another --name"
            )
    return tasks


def _registered_task(version: ModelVersion) -> RegisteredTask:
    tags = version.tags
    return RegisteredTask(
        task=int(tags.get("task", -1)),
        version=str(version.version),
        run_id=version.run_id or "",
        accuracies=[float(a) for a in json.loads(tags.get("test_accuracies", "[]"))],
        config_hash=tags.get("config_hash", ""),
    )


def clear_chain(chain: str) -> None:
    """Drop the task-* aliases (for --restart); the old versions stay for lineage."""
    client = MlflowClient()
    with _step(f"clearing registered model {_checked(chain)}"):
        model = _registered_model(client, chain)
        for alias in model.aliases if model is not None else {}:
            if re.fullmatch(r"task-\d+", alias):
                client.delete_registered_model_alias(chain, alias)


def start_chain_run(chain: str, experiment_id: str, config: Config, config_hash: str,
                    parent_run_id: str | None = None) -> str:
    """The chain's parent run: found again by its tags on resume, created (with params) otherwise.

    A sweep's trials nest their chain runs under the sweep's run (`parent_run_id`).
    """
    client = MlflowClient()
    with _step(f"chain run {_checked(chain)}-{config_hash}"):
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`dgr.chain` = '{chain}' and tags.`dgr.config_hash` = '{config_hash}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if found:
            return found[0].info.run_id
        tags = {"dgr.chain": chain, "dgr.config_hash": config_hash}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=f"{chain}-{config_hash}", tags=tags)
        params = [Param(key, str(value)) for key, value in flatten(config).items()]
        client.log_batch(run.info.run_id, params=params)
        return run.info.run_id


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Metrics on an existing run, e.g. a chain's average accuracy so far after each task (step = task)."""
    now = int(time.time() * 1000)
    with _step(f"logging metrics of run {run_id}"):
        MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def start_sweep_run(experiment_id: str, name: str, params: dict[str, str]) -> str:
    """The sweep's parent run, found again by name on resume (a restored sweep logs into it again)."""
    client = MlflowClient()
    with _step(f"sweep run {name}"):
        found = client.search_runs([experiment_id], filter_string=f"tags.`dgr.sweep` = '{name}'",
                                   run_view_type=ViewType.ACTIVE_ONLY, max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(experiment_id, run_name=name, tags={"dgr.sweep": name})
        client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        return run.info.run_id


def finish_run(run_id: str, artifacts: dict[str, Path] | None = None, tags: dict[str, str] | None = None) -> None:
    client = MlflowClient()
    with _step(f"finishing run {run_id}"):
        for path in (artifacts or {}).values():
            client.log_artifact(run_id, str(path))
        for key, value in (tags or {}).items():
            client.set_tag(run_id, key, value)
        client.set_terminated(run_id, "FINISHED")


def finish_chain_run(run_id: str, average_accuracy: float | None = None, status: str = "FINISHED") -> None:
    """Log the chain's final average accuracy and end its run (FINISHED, or KILLED / FAILED for a chain
    that stopped early); a resume logs into it again."""
    client = MlflowClient()
    with _step(f"ending chain run {run_id}"):
        if average_accuracy is not None:
            client.log_metric(run_id, "average_accuracy", float(average_accuracy))
        client.set_terminated(run_id, status)


def close_open_chain_run(experiment_id: str, chain: str, status: str, average_accuracy: float | None = None) -> None:
    """End `chain`'s run as `finish_chain_run` would if it is still RUNNING (its process was ended first)."""
    client = MlflowClient()
    with _step(f"closing chain run of {_checked(chain)}"):
        open_runs = client.search_runs([experiment_id], filter_string=f"tags.`dgr.chain` = '{chain}' and "
                                       "attributes.status = 'RUNNING'")
    for run in open_runs:
        finish_chain_run(run.info.run_id, average_accuracy, status)


def log_task(parent_run_id: str, experiment_id: str, chain: str, config_hash: str, task: TaskInfo,
             metrics: dict[str, float], accuracy_row: list[float], artifacts: dict[str, Path]) -> str:
    """A finished nested run for one task: its metrics, its accuracy row and its figures."""
    client = MlflowClient()
    tags = {"mlflow.parentRunId": parent_run_id, "dgr.chain": chain, "dgr.config_hash": config_hash,
            "dgr.task": str(task.index), "dgr.task_name": task.name}
    with _step(f"creating the run of task {task.index}"):
        run_id = client.create_run(experiment_id, run_name=f"{_checked(chain)}-task-{task.index}",
                                   tags=tags).info.run_id
    values = dict(metrics)
    values.update({f"acc_task_{j}": a for j, a in enumerate(accuracy_row)})
    if accuracy_row:
        values["average_accuracy"] = sum(accuracy_row) / len(accuracy_row)
    now = int(time.time() * 1000)
    try:
        with _step(f"logging the run of task {task.index}"):
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, task.index) for k, v in values.items()])
            for path in artifacts.values():
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id, "FINISHED")
    except BaseException:
        with suppress(Exception):  # keep the original error if the store is gone altogether
            client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def register_scholar(chain: str, run_id: str, scholar_folder: Path, task: TaskInfo, parent_version: str | None,
                     config_hash: str, data_fingerprint: str, accuracies: list[float]) -> str:
    """Log the scholar folder under `run_id` and make it version task-k of the chain, atomically.

    A version exists only with its tags (set on creation) and its alias: if the alias cannot be set,
    the version is deleted again, so a rerun finds the chain as it was before this task.
    """
    client = MlflowClient()
    alias = f"task-{task.index}"
    _refuse_duplicate(client, _checked(chain), alias, config_hash)
    with _step(f"logging scholar {scholar_folder} to run {run_id}"):
        client.log_artifacts(run_id, str(scholar_folder), SCHOLAR_PATH)
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{SCHOLAR_PATH}"
    with _step(f"creating registered model {chain}"):
        if _registered_model(client, chain) is None:
            client.create_registered_model(chain, description=f"Deep Generative Replay scholars of chain {chain}")
    tags = {
        "task": str(task.index),
        "task_name": task.name,
        "parent_version": parent_version or NONE_PARENT,
        "config_hash": config_hash,
        "data_fingerprint": data_fingerprint,
        "test_accuracies": json.dumps(accuracies),
        "average_accuracy": str(sum(accuracies) / len(accuracies) if accuracies else float("nan")),
    }
    with _step(f"creating a version of {chain} for task {task.index}"):
        version = str(client.create_model_version(chain, source=source, run_id=run_id, tags=tags).version)
    try:
        client.set_registered_model_alias(chain, alias, version)
    except BaseException as exc:
        _undo_version(client, chain, version, f"setting alias {alias} of {chain} to version {version}", exc)
    return version


def _undo_version(client: MlflowClient, chain: str, version: str, step: str, exc: BaseException) -> None:
    """Delete a half-registered version and re-raise; Ctrl-C stays a KeyboardInterrupt."""
    try:
        client.delete_model_version(chain, version)
        outcome = "version deleted again"
    except Exception as cleanup:  # the original failure matters more; name both
        outcome = f"and deleting version {version} failed too ({_one_line(cleanup)}): delete it by hand"
    if not isinstance(exc, Exception):
        raise exc
    raise RegistryError(f"{step} failed: {_one_line(exc)}; {outcome}") from None


def _refuse_duplicate(client: MlflowClient, chain: str, alias: str, config_hash: str) -> None:
    with _step(f"reading alias {alias} of {chain}"):
        model = _registered_model(client, chain)
        current = model.aliases.get(alias) if model is not None else None
        if current is None:
            return
        existing = client.get_model_version(chain, str(current)).tags.get("config_hash")
    if existing == config_hash:
        raise RegistryError(f"registered model {chain}: {alias} is already version {current} with config "
                            f"hash {config_hash}; not registering it twice")


def scholar_uri(chain: str, task: int) -> str:
    return f"models:/{chain}@task-{task}"


def download_scholar(chain: str, task: int, dest: Path | None = None) -> Path:
    """The scholar folder of alias task-`task`, downloaded to `dest` (a new temporary folder if None)."""
    uri = scholar_uri(_checked(chain), task)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=None if dest is None else str(dest))
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"cannot download scholar {uri}: {_one_line(exc)}") from None
    return Path(local)


def load_registered_scholar(chain: str, task: int, device: torch.device | str = "cpu") -> Scholar:
    with tempfile.TemporaryDirectory(prefix="dgr-scholar-") as tmp:
        return load_scholar(download_scholar(chain, task, Path(tmp)), device)


def set_alias(chain: str, alias: str, version: str) -> None:
    with _step(f"setting alias {alias} of {chain} to version {version}"):
        MlflowClient().set_registered_model_alias(chain, alias, version)


def _registered_model(client: MlflowClient, chain: str) -> RegisteredModel | None:
    try:
        return client.get_registered_model(chain)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _checked(chain: str) -> str:
    if not _CHAIN_NAME.fullmatch(chain):
        raise RegistryError(f"chain name {chain!r}: use letters, digits, '.', '_' and '-' only")
    return chain


@contextmanager
def _step(description: str) -> Iterator[None]:
    """Turn MLflow's multi-line errors into one RegistryError line naming what we were doing."""
    try:
        yield
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"{description}: {_one_line(exc)}") from None


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())[:300]
