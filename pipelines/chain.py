"""The chain's driver: trains a stream task by task on one Ray Train worker group and registers each
task's scholar in MLflow as it arrives. `run_chain` is the entry for the main job and for sweep trials.

With no RAY_ADDRESS it starts a local Ray; with no MLFLOW_TRACKING_URI it uses SQLite (<workdir>/mlflow.db)
and local artifacts. Rerunning the same chain resumes after its last registered task.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from dgr.config import Config, config_hash, flatten
from dgr.evaluation import (Matrix, average_accuracy, backward_transfer, evaluate, forgetting, matrix_row,
                            mean_forgetting)
from dgr.scenario import Scenario, output_size
from dgr.scholar import Scholar, new_scholar, scholar_from_spec
from dgr.sequence import validation_set
from dgr.streams import Task, build_stream
from dgr.targets import LabelledData
from dgr.training import check_finite
from pipelines import audit, figures, registry, tracking
from pipelines.cluster import WorkerPlan, alive_nodes, check_placeable, driver_node, join_ray, plan_workers
from pipelines.credentials import has_password
from pipelines.gate import TaskGate
from pipelines.progress import ChainProgress
from pipelines.settings import PipelineConfig, check_batch_split
from pipelines.trainer import Fit, chain_trainer

EXPERIMENT = "dgr"
NAMESPACE = "dgr"
TaskHook = Callable[[int, Matrix, Matrix], None]  # (task, test accuracies, validation accuracies) so far


@dataclass(frozen=True)
class WorkerHook:
    """For tests: `target` ("module:function") is called as function(rank, progress, **kwargs) on every
    worker at every iteration. The production worker has none and checks nothing."""

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChainResult:
    registered_model: str
    accuracy_matrix: Matrix
    versions: list[str]
    wall_seconds: float
    validation_matrix: Matrix = field(default_factory=list)  # empty unless the stream holds validation data out
    train_seconds: list[float] = field(default_factory=list)
    register_seconds: list[float] = field(default_factory=list)  # driver: evaluate, log, register
    worker_nodes: list[list[str]] = field(default_factory=list)  # per task trained: each rank's Ray node
    workers: dict[str, Any] = field(default_factory=dict)  # the worker plan, when workers ran

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "average_accuracy": average_accuracy(self.accuracy_matrix),
                "forgetting": forgetting(self.accuracy_matrix),
                "backward_transfer": backward_transfer(self.accuracy_matrix)}


class ChainStopped(Exception):
    """Raised by an `on_task` hook to end the chain after that task (a sweep's early stop): the workers
    are released, the chain run is marked KILLED, and `run_chain` raises it on."""


@dataclass
class Chain:
    """The driver's state while a chain trains: what it learns, where it logs, and what it has so far."""

    config: Config
    tasks: list[Task]
    name: str
    digest: str
    experiment: str
    run_id: str
    result: ChainResult
    on_task: TaskHook | None = None


def fingerprint(task: Task) -> str:
    """Identifies the task's training data without keeping it: sha256 of its images and labels."""
    digest = hashlib.sha256()
    digest.update(task.train_x.numpy().tobytes())
    digest.update(task.train_y.numpy().tobytes())
    return digest.hexdigest()[:16]


def scholar_inputs(config: Config, tasks: Sequence[Task]) -> tuple[tuple[int, ...], int]:
    """The input shape (C, H, W) and the number of outputs of the stream's scholar."""
    return tasks[0].input_shape, output_size(Scenario(config.stream.scenario), [t.info for t in tasks])


def run_chain(config: Config, pipeline: PipelineConfig, data_root: Path, workdir: Path, restart: bool = False,
              parent_run: str | None = None, on_task: TaskHook | None = None,
              hook: WorkerHook | None = None) -> ChainResult:
    """Train every task not yet registered; `on_task(k, matrix, validation_matrix)` runs after task k is
    registered, while the workers wait for task k's release (and first for each task registered before a
    resume). Without `on_task`, and where the plan says so (`pipeline.run_ahead`), the workers train task
    k+1 while the driver registers task k."""
    start = time.perf_counter()
    data_root, workdir = data_root.absolute(), workdir.absolute()  # workers and trials run elsewhere
    tasks = build_stream(config.stream, data_root, config.run.seed)  # bad data fails before Ray starts
    # an architecture these inputs cannot feed (a conv generator's sides) fails here, not in every worker
    new_scholar(config, *scholar_inputs(config, tasks))
    tracking_uri = tracking.configure_tracking(workdir)
    experiment = tracking.ensure_experiment(EXPERIMENT, workdir)
    name, digest = pipeline.chain_name(config), config_hash(config)
    if restart:
        registry.clear_chain(name)
    done = registry.chain_tasks(name, digest)
    _check_same_data(name, done, tasks)
    result = ChainResult(name, [matrix_row(t.accuracies, len(tasks)) for t in done], [t.version for t in done], 0.0,
                         [matrix_row(t.validation, len(tasks)) for t in done if t.validation])
    plan = None
    if len(done) < len(tasks):
        if done:
            registry.load_registered_scholar(name, len(done) - 1)  # a corrupt checkpoint fails here, not in Ray
            print(f"resuming {name} after task {len(done) - 1} (version {result.versions[-1]})", flush=True)
        plan = _plan(config, pipeline)  # before the chain's run: a bad plan leaves nothing behind
    chain = Chain(config, tasks, name, digest, experiment,
                  tracking.start_chain_run(name, experiment, config, digest, parent_run, restart), result, on_task)
    if url := tracking.experiment_url(tracking_uri, experiment):
        print(f"MLflow: {url}", flush=True)
    try:
        if on_task is not None:  # a resumed sweep trial reports the tasks learned before, as if just learned
            for k in range(len(done)):
                on_task(k, result.accuracy_matrix[:k + 1], result.validation_matrix[:k + 1])
        if plan is not None:
            _train_remaining(chain, plan, pipeline, data_root, workdir, tracking_uri, hook)
    except BaseException as exc:
        tracking.finish_chain_run(chain.run_id, status=_stopped_status(exc))
        raise
    tracking.finish_chain_run(chain.run_id, average_accuracy(result.accuracy_matrix), step=len(tasks) - 1)
    result.wall_seconds = time.perf_counter() - start
    return result


def _check_same_data(name: str, done: Sequence[registry.RegisteredTask], tasks: Sequence[Task]) -> None:
    """A resumed chain goes on from scholars trained on this very data (another --data-root, or changed
    files under it, would carry on silently otherwise)."""
    for registered in done:
        if registered.data_fingerprint != (now := fingerprint(tasks[registered.task])):
            raise tracking.RegistryError(
                f"registered model {name}: version {registered.version} (task {registered.task}) was trained on "
                f"data with fingerprint {registered.data_fingerprint}, this run's task {registered.task} has {now} "
                f"(another --data-root or changed files); {registry.NEW_CHAIN}")


def _stopped_status(exc: BaseException) -> str:
    """A run stopped on purpose (the scheduler, Ctrl-C) is KILLED; one that broke is FAILED."""
    return "KILLED" if isinstance(exc, (ChainStopped, KeyboardInterrupt)) else "FAILED"


def _plan(config: Config, pipeline: PipelineConfig) -> WorkerPlan:
    """Join (or start) Ray and resolve the worker group from the cluster's nodes."""
    fixed = join_ray()
    nodes = alive_nodes()
    plan = plan_workers(pipeline, nodes, driver_node())
    if fixed:
        check_placeable(plan, nodes, pipeline)
    check_batch_split(config, plan.num_workers)
    print(f"workers: {plan.describe()}", flush=True)
    return plan


def _scholar_of(payload: dict[str, Any]) -> Scholar:
    scholar = scholar_from_spec(payload["spec"])
    scholar.load_state_dict(torch.load(io.BytesIO(payload["weights"]), weights_only=True))
    return scholar.eval()


def _register_task(chain: Chain, task: Task, run_id: str, scholar: Scholar, metrics: dict[str, float]) -> str:
    """Evaluate and audit the new scholar on every task so far (test and validation data), log it on the
    task's run and register it."""
    config, matrix, versions = chain.config, chain.result.accuracy_matrix, chain.result.versions
    learned = chain.tasks[:task.index + 1]
    accuracies = _evaluated(chain, task, scholar, [LabelledData.of([t], "test") for t in learned], matrix)
    held_out = [validation_set(t) for t in learned]
    validation = [] if None in held_out else _evaluated(chain, task, scholar, held_out,
                                                        chain.result.validation_matrix)
    metrics = {**metrics, **{f"val_acc_task_{j}": a for j, a in enumerate(validation)}}
    so_far = {"average_accuracy_so_far": average_accuracy(matrix), "forgetting_so_far": mean_forgetting(matrix)}
    if validation:
        metrics["validation_accuracy"] = so_far["validation_accuracy_so_far"] = \
            average_accuracy(chain.result.validation_matrix)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        artifacts = {"accuracy_matrix.png": figures.accuracy_heatmap(matrix, folder / "accuracy_matrix.png")}
        if scholar.generator is not None:
            samples = scholar.sample(64, torch.Generator().manual_seed(task.index))
            artifacts["samples.png"] = figures.sample_grid(samples, folder / "samples.png")
        tracking.log_task(run_id, task.info, metrics, accuracies, artifacts)
    privacy = audit.audit_version(run_id, scholar, learned, config)  # a version never exists unaudited
    facts = registry.VersionFacts(tuple(t.info for t in learned), config.stream.name, config.stream.scenario,
                                  config.replay.arm, chain.digest, fingerprint(task), accuracies,
                                  versions[-1] if versions else None, validation, privacy)
    version = registry.register_scholar(chain.name, run_id, scholar, facts)
    versions.append(version)
    tracking.log_metrics(chain.run_id, so_far, step=task.index)
    checked = f"; validation {' '.join(f'{a:.4f}' for a in validation)}" if validation else ""
    print(f"task {task.index} ({task.name}): accuracies {' '.join(f'{a:.4f}' for a in accuracies)}{checked}; "
          f"registered {chain.name} version {version} (alias task-{task.index})", flush=True)
    return version


def _evaluated(chain: Chain, task: Task, scholar: Scholar, sets: Sequence[Any], matrix: Matrix) -> list[float]:
    """The solver's accuracy on each task's `sets` so far, appended to `matrix` as its row for `task`."""
    accuracies = evaluate(scholar.solver, sets, Scenario(chain.config.stream.scenario), task.info,
                          chain.config.run.eval_batch_size)
    matrix.append(matrix_row(accuracies, len(chain.tasks)))
    return accuracies


def _train_remaining(chain: Chain, plan: WorkerPlan, pipeline: PipelineConfig, data_root: Path, workdir: Path,
                     tracking_uri: str, hook: WorkerHook | None) -> None:
    import ray

    first = len(chain.result.versions)
    run_ahead = plan.run_ahead and chain.on_task is None  # a sweep's scheduler decides after each task
    gate_name = f"gate-{chain.name}-{uuid.uuid4().hex[:8]}"
    gate = ray.remote(num_cpus=0)(TaskGate).options(name=gate_name, namespace=NAMESPACE).remote(first)
    settings = {"config": flatten(chain.config), "data_root": str(data_root), "workdir": str(workdir),
                "tracking_uri": "" if has_password(tracking_uri) else tracking_uri,  # the nodes' own, then
                "chain": chain.name, "gate": gate_name, "namespace": NAMESPACE, "threads": plan.threads,
                "log_every": pipeline.log_every, "hook": asdict(hook) if hook else None, "run_ahead": run_ahead}
    fit = Fit(chain_trainer(settings, plan, pipeline.max_failures, f"{chain.name}-{chain.digest}",
                            pipeline.ray_storage(workdir)))
    task_runs = {first: _open_task_run(chain, chain.tasks[first], gate)}  # before the workers ask for it
    fit.start()
    chain.result.workers = asdict(plan)
    progress = ChainProgress(chain.name, len(chain.tasks), first)
    with progress.shown():  # on a terminal the bar stays below the workers' lines
        try:
            for task in chain.tasks[first:]:
                payload = _trained(gate, fit, task.index)
                following = chain.tasks[task.index + 1] if task.index + 1 < len(chain.tasks) else None
                if run_ahead and following is not None:  # the workers are training it already
                    task_runs[following.index] = _open_task_run(chain, following, gate)
                version = _register_trained(chain, task, task_runs[task.index], payload)
                tracking.end_run(task_runs.pop(task.index), "FINISHED")
                progress.task_done(task.index, chain.result.train_seconds[-1] + chain.result.register_seconds[-1])
                if chain.on_task is not None:
                    # may raise ChainStopped: the workers wait meanwhile
                    chain.on_task(task.index, chain.result.accuracy_matrix, chain.result.validation_matrix)
                if not run_ahead and following is not None:
                    task_runs[following.index] = _open_task_run(chain, following, gate)
                ray.get(gate.registered.remote(task.index, version))
        except BaseException as exc:
            for run_id in task_runs.values():
                tracking.end_run(run_id, _stopped_status(exc))
            ray.get(gate.abort.remote())
            # Workers waiting at the gate end at once; workers that ran ahead end with their task, or with
            # the driver's Ray, so the driver does not wait for them long.
            fit.join(timeout=10 if run_ahead else 60)
            raise
    fit.join()
    if fit.error is not None:
        raise RuntimeError(f"Ray Train failed after the last task: {fit.error}")
    ray.kill(gate)


def _trained(gate: Any, fit: Fit, task: int) -> dict[str, Any]:
    """What the workers' rank 0 hands the gate once `task` is trained (scholar, metrics, nodes)."""
    import ray

    while (payload := ray.get(gate.wait_trained.remote(task, 2.0))) is None:
        if not fit.is_alive():
            raise RuntimeError(f"Ray Train stopped before task {task} was trained: {fit.error}")
    return payload


def _register_trained(chain: Chain, task: Task, run_id: str, payload: dict[str, Any]) -> str:
    """Register the scholar the workers trained on `task` (never a diverged one) and record its times."""
    registering = time.perf_counter()
    check_finite(task.index, {k.removeprefix("loss_"): v for k, v in payload["metrics"].items()
                              if k.startswith("loss_")})
    version = _register_task(chain, task, run_id, _scholar_of(payload), payload["metrics"])
    chain.result.train_seconds.append(payload["metrics"]["train_seconds"])
    chain.result.register_seconds.append(time.perf_counter() - registering)
    chain.result.worker_nodes.append(payload["nodes"])
    return version


def _open_task_run(chain: Chain, task: Task, gate: Any) -> str:
    """The task's run, started before its training and handed to the workers' rank 0 for its losses."""
    import ray

    run_id = tracking.start_task_run(chain.run_id, chain.experiment, chain.name, chain.config, chain.digest,
                                     task.info)
    ray.get(gate.set_run.remote(task.index, run_id))
    return run_id
