"""The scholar registry: one registered model per chain, one version per task, reached by alias.

A chain is one registered model named after the sequence (`--name`); version k holds the scholar trained
on task k and is reached by the alias `task-k` (MLflow reserves `latest` and `v<digits>`). Each version
is an MLflow Model logged under the task's run (`pipelines.scholar_format`), registered from it the way
`mlflow.register_model` does, with its lineage as tags and a description. Runs and errors are
`pipelines.tracking`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import mlflow
import torch
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dgr.config import is_number
from dgr.scholar import Scholar
from dgr.streams import TaskInfo
from pipelines.scholar_format import load_scholar, log_scholar_model
from pipelines.tracking import RegistryError, checked_name, mlflow_step, one_line

NONE_PARENT = "none"
_TASK_ALIAS = re.compile(r"task-(\d+)")

# what a run that finds another chain under its name can do (either command)
NEW_CHAIN = ("rerun with --restart to start a new chain, or give this one another name (--set pipeline.name=NAME; "
             "dgr-sweep: --name NAME)")


@dataclass(frozen=True)
class RegisteredTask:
    task: int
    version: str
    run_id: str
    accuracies: list[float]
    config_hash: str
    validation: list[float]  # empty when the stream holds no validation data out
    data_fingerprint: str  # of the task's training data (`pipelines.chain.fingerprint`)


@dataclass(frozen=True)
class VersionFacts:
    """What a version records besides its scholar: the tasks learned so far (the last is its own), the
    chain's stream, scenario, replay arm and config hash, its data and accuracies, its parent, and its
    privacy audit."""

    tasks: Sequence[TaskInfo]
    stream: str
    scenario: str
    arm: str
    config_hash: str
    data_fingerprint: str
    accuracies: list[float]
    parent_version: str | None
    validation: list[float] = field(default_factory=list)  # accuracies on held-out training data
    privacy: dict[str, str] = field(default_factory=dict)  # the audit's `privacy.*` tags (pipelines.audit)

    @property
    def task(self) -> TaskInfo:
        return self.tasks[-1]


def scholar_uri(chain: str, task: int) -> str:
    return f"models:/{chain}@task-{task}"


def chain_tasks(chain: str, config_hash: str) -> list[RegisteredTask]:
    """The versions aliased task-0, task-1, ..., in task order; a gap in the aliases is an error."""
    client = MlflowClient()
    with mlflow_step(f"reading registered model {checked_name(chain)}"):
        model = _registered_model(client, chain)
        aliases = _task_aliases(model) if model is not None else {}
        missing = [k for k in range(len(aliases)) if k not in aliases]
        if missing:
            raise RegistryError(
                f"registered model {chain} has aliases {', '.join(f'task-{k}' for k in sorted(aliases))} but no "
                f"task-{missing[0]}: set it to the version of task {missing[0]} or rerun with --restart")
        tasks = [_registered_task(chain, k, client.get_model_version(chain, aliases[k])) for k in range(len(aliases))]
    for done in tasks:
        if done.config_hash != config_hash:
            raise RegistryError(
                f"registered model {chain}: version {done.version} (task {done.task}) was trained with "
                f"config hash {done.config_hash}, this run has {config_hash}; {NEW_CHAIN}")
    return tasks


def _task_aliases(model: RegisteredModel) -> dict[int, str]:
    return {int(m.group(1)): str(v) for alias, v in model.aliases.items() if (m := _TASK_ALIAS.fullmatch(alias))}


def _registered_task(chain: str, k: int, version: ModelVersion) -> RegisteredTask:
    """The version under alias task-`k`, its tags checked: a bad one is named, never guessed."""
    tags = version.tags

    def bad(tag: str, expected: str) -> RegistryError:
        return RegistryError(f"registered model {chain}: version {version.version} (alias task-{k}) has tag "
                             f"{tag}={tags.get(tag)!r}, expected {expected}; fix the tag or rerun with --restart")

    if tags.get("task") != str(k):
        raise bad("task", f"the task number {k}")
    def numbers(tag: str, default: str) -> list[float]:
        try:
            values = json.loads(tags.get(tag, default))
        except ValueError:
            raise bad(tag, "a JSON list of numbers") from None
        if not (isinstance(values, list) and all(is_number(a) for a in values)):
            raise bad(tag, "a JSON list of numbers")
        return [float(a) for a in values]

    return RegisteredTask(task=k, version=str(version.version), run_id=version.run_id or "",
                          accuracies=numbers("test_accuracies", ""), config_hash=tags.get("config_hash", ""),
                          validation=numbers("validation_accuracies", "[]"),
                          data_fingerprint=tags.get("data_fingerprint", ""))


def clear_chain(chain: str) -> None:
    """Drop the task-* aliases (for --restart); the old versions stay for lineage."""
    client = MlflowClient()
    with mlflow_step(f"clearing registered model {checked_name(chain)}"):
        model = _registered_model(client, chain)
        for alias in model.aliases if model is not None else {}:
            if _TASK_ALIAS.fullmatch(alias):
                client.delete_registered_model_alias(chain, alias)


def drop_chain(chain: str) -> None:
    """Delete the chain's registered model, versions and aliases (a sweep's losing trial); the runs and
    their artifacts, the scholars included, stay. A chain already gone is no error."""
    client = MlflowClient()
    with mlflow_step(f"deleting registered model {checked_name(chain)}"):
        if _registered_model(client, chain) is not None:
            client.delete_registered_model(chain)


def register_scholar(chain: str, run_id: str, scholar: Scholar, facts: VersionFacts) -> str:
    """Log `scholar` as a model of run `run_id` and make it version task-k of the chain, atomically.

    A version exists only with its tags and description (set on creation) and its alias: if the alias
    cannot be set, the version is deleted again, so a rerun finds the chain as it was before this task.
    """
    client = MlflowClient()
    task = facts.task
    alias = f"task-{task.index}"
    _refuse_duplicate(client, checked_name(chain), alias, facts.config_hash)
    with mlflow_step(f"logging the scholar of task {task.index} to run {run_id}"):
        model_id = log_scholar_model(run_id, scholar, facts.tasks, facts.scenario, scholar_uri(chain, task.index))
    _describe_chain(client, chain, facts)
    with mlflow_step(f"creating a version of {chain} for task {task.index}"):
        version = str(client.create_model_version(chain, source=f"models:/{model_id}", run_id=run_id,
                                                  tags=_tags(facts), description=_description(facts),
                                                  model_id=model_id).version)
    try:
        client.set_registered_model_alias(chain, alias, version)
    except BaseException as exc:
        _undo_version(client, chain, version, f"setting alias {alias} of {chain} to version {version}", exc)
    return version


def _describe_chain(client: MlflowClient, chain: str, facts: VersionFacts) -> None:
    """The registered model, created if missing, tagged with what the chain learns and how."""
    tags = {"stream": facts.stream, "scenario": facts.scenario, "arm": facts.arm, "config_hash": facts.config_hash}
    with mlflow_step(f"registered model {chain}"):
        model = _registered_model(client, chain)
        if model is None:
            client.create_registered_model(chain, tags=tags, description=(
                f"Deep Generative Replay scholars of chain {chain}: version k is the scholar after task k "
                "(alias task-k)"))
            return
        for key, value in tags.items():
            if model.tags.get(key) != value:  # a --restart with another config retags the chain
                client.set_registered_model_tag(chain, key, value)


def _tags(facts: VersionFacts) -> dict[str, str]:
    accuracies = facts.accuracies
    return {
        "task": str(facts.task.index),
        "task_name": facts.task.name,
        "parent_version": facts.parent_version or NONE_PARENT,
        "config_hash": facts.config_hash,
        "data_fingerprint": facts.data_fingerprint,
        "test_accuracies": json.dumps(accuracies),
        "average_accuracy": str(sum(accuracies) / len(accuracies) if accuracies else float("nan")),
        **({"validation_accuracies": json.dumps(facts.validation)} if facts.validation else {}),
        **facts.privacy,
    }


def _description(facts: VersionFacts) -> str:
    """What the UI shows on the version's page: its task, its parent and its accuracies."""
    k = facts.task.index
    parent = (f"parent: version {facts.parent_version}, alias task-{k - 1}" if facts.parent_version
              else "parent: none (first task of the chain)")
    rows = ", ".join(f"task {j} {a:.4f}" for j, a in enumerate(facts.accuracies))
    average = sum(facts.accuracies) / len(facts.accuracies) if facts.accuracies else float("nan")
    return (f"Scholar after task {k} ({facts.task.name}). {parent}. Test accuracies: {rows} "
            f"(average {average:.4f}).")


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


def load_registered_scholar(chain: str, task: int, device: torch.device | str = "cpu") -> Scholar:
    """The scholar of alias task-`task` (what the next task of the chain starts from)."""
    return load_scholar(scholar_uri(checked_name(chain), task), device)


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


def download_chain_files(chain: str, dest: Path) -> None:
    """Every artifact of the chain's runs (chain and task runs) under dest/runs/<run id>, and every version's
    files under dest/versions/<version>."""
    client = MlflowClient()
    with mlflow_step(f"downloading the files of chain {checked_name(chain)}"):
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, filter_string=f"tags.`dgr.chain` = '{chain}'")
        versions = client.search_model_versions(f"name = '{chain}'")
        if not runs and not versions:
            raise RegistryError(f"chain {chain}: no runs and no registered versions in the store "
                                         f"{mlflow.get_tracking_uri()}; check pipeline.name and MLFLOW_TRACKING_URI")
        for run in runs:
            target = dest / "runs" / run.info.run_id
            target.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(target))
        for version in versions:
            target = dest / "versions" / str(version.version)
            target.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{chain}/{version.version}", dst_path=str(target))
