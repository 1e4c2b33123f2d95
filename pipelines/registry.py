"""The scholar registry: one registered model per chain, one version per task, reached by alias.

A chain is one registered model named after the sequence (`--name`); version k holds the scholar trained
on task k and is reached by the alias `task-k` (MLflow reserves `latest` and `v<digits>`). Scholars are
logged as plain artifacts (spec.json + weights.pt, see `dgr.checkpoint`) and versions are created from
the run's artifact URI: `mlflow.register_model` only accepts logged models, and a pickled pyfunc would
load arbitrary code. Runs and errors are `pipelines.tracking`.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dgr.checkpoint import load_scholar
from dgr.scholar import Scholar
from dgr.streams import TaskInfo
from pipelines.tracking import RegistryError, checked_name, mlflow_step, one_line

SCHOLAR_PATH = "scholar"
NONE_PARENT = "none"


@dataclass(frozen=True)
class RegisteredTask:
    task: int
    version: str
    run_id: str
    accuracies: list[float]
    config_hash: str
def chain_tasks(chain: str, config_hash: str) -> list[RegisteredTask]:
    """The versions aliased task-0, task-1, ... up to the first missing alias, in task order."""
    client = MlflowClient()
    with mlflow_step(f"reading registered model {checked_name(chain)}"):
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
    with mlflow_step(f"clearing registered model {checked_name(chain)}"):
        model = _registered_model(client, chain)
        for alias in model.aliases if model is not None else {}:
            if re.fullmatch(r"task-\d+", alias):
                client.delete_registered_model_alias(chain, alias)
def drop_chain(chain: str) -> None:
    """Delete the chain's registered model, versions and aliases (a sweep's losing trial); the runs and
    their artifacts, the scholars included, stay. A chain already gone is no error."""
    client = MlflowClient()
    with mlflow_step(f"deleting registered model {checked_name(chain)}"):
        if _registered_model(client, chain) is not None:
            client.delete_registered_model(chain)
def register_scholar(chain: str, run_id: str, scholar_folder: Path, task: TaskInfo, parent_version: str | None,
                     config_hash: str, data_fingerprint: str, accuracies: list[float]) -> str:
    """Log the scholar folder under `run_id` and make it version task-k of the chain, atomically.

    A version exists only with its tags (set on creation) and its alias: if the alias cannot be set,
    the version is deleted again, so a rerun finds the chain as it was before this task.
    """
    client = MlflowClient()
    alias = f"task-{task.index}"
    _refuse_duplicate(client, checked_name(chain), alias, config_hash)
    with mlflow_step(f"logging scholar {scholar_folder} to run {run_id}"):
        client.log_artifacts(run_id, str(scholar_folder), SCHOLAR_PATH)
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{SCHOLAR_PATH}"
    with mlflow_step(f"creating registered model {chain}"):
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
    with mlflow_step(f"creating a version of {chain} for task {task.index}"):
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
        outcome = f"and deleting version {version} failed too ({one_line(cleanup)}): delete it by hand"
    if not isinstance(exc, Exception):
        raise exc
    raise RegistryError(f"{step} failed: {one_line(exc)}; {outcome}") from None
def _refuse_duplicate(client: MlflowClient, chain: str, alias: str, config_hash: str) -> None:
    with mlflow_step(f"reading alias {alias} of {chain}"):
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
    uri = scholar_uri(checked_name(chain), task)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=None if dest is None else str(dest))
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"cannot download scholar {uri}: {one_line(exc)}") from None
    return Path(local)
def load_registered_scholar(chain: str, task: int, device: torch.device | str = "cpu") -> Scholar:
    with tempfile.TemporaryDirectory(prefix="dgr-scholar-") as tmp:
        return load_scholar(download_scholar(chain, task, Path(tmp)), device)
def set_alias(chain: str, alias: str, version: str) -> None:
    with mlflow_step(f"setting alias {alias} of {chain} to version {version}"):
        MlflowClient().set_registered_model_alias(chain, alias, version)
def _registered_model(client: MlflowClient, chain: str) -> RegisteredModel | None:
    try:
        return client.get_registered_model(chain)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
