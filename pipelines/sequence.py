"""The main job: learn a stream task by task on Ray Train workers, each scholar registered in MLflow.

    python pipelines/sequence.py [--config configs/split_mnist.yaml] [--data-root DIR] [--set k=v ...]
    ray job submit --address http://HEAD:8265 --working-dir . -- python pipelines/sequence.py --config ...

With no RAY_ADDRESS it starts a local Ray; with no MLFLOW_TRACKING_URI it uses SQLite (./mlflow.db) and
local artifacts (./mlartifacts). Rerunning the same chain resumes after its last registered task.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python pipelines/sequence.py` from a checkout

import torch  # noqa: E402

from dgr.checkpoint import CheckpointError, save_scholar  # noqa: E402
from dgr.config import Config, ConfigError, config_hash, flatten  # noqa: E402
from dgr.datasets import DatasetError, resolve_data_root  # noqa: E402
from dgr.evaluation import (Matrix, average_accuracy, backward_transfer, evaluate, forgetting,  # noqa: E402
                            matrix_row, mean_forgetting)
from dgr.scenario import Scenario  # noqa: E402
from dgr.scholar import Scholar, scholar_from_spec  # noqa: E402
from dgr.streams import Task, build_stream  # noqa: E402
from dgr.targets import LabelledData  # noqa: E402
from pipelines import figures, registry  # noqa: E402
from pipelines.settings import PipelineConfig, load_settings  # noqa: E402

EXPERIMENT = "dgr"
FAULT_ENV = "DGR_FAULT_INJECTION"  # "task:iteration:marker-file": rank 1 dies once there (failure tests)
NAMESPACE = "dgr"


@dataclass
class ChainResult:
    registered_model: str
    accuracy_matrix: Matrix
    versions: list[str]
    wall_seconds: float
    train_seconds: list[float] = field(default_factory=list)
    register_seconds: list[float] = field(default_factory=list)  # driver: evaluate, log, register

    def summary(self) -> dict[str, Any]:
        return {
            "registered_model": self.registered_model,
            "versions": self.versions,
            "accuracy_matrix": self.accuracy_matrix,
            "average_accuracy": average_accuracy(self.accuracy_matrix),
            "forgetting": forgetting(self.accuracy_matrix),
            "backward_transfer": backward_transfer(self.accuracy_matrix),
            "wall_seconds": self.wall_seconds,
            "train_seconds": self.train_seconds,
            "register_seconds": self.register_seconds,
        }


def fingerprint(task: Task) -> str:
    """Identifies the task's training data without keeping it: sha256 of its images and labels."""
    digest = hashlib.sha256()
    digest.update(task.train_x.numpy().tobytes())
    digest.update(task.train_y.numpy().tobytes())
    return digest.hexdigest()[:16]


def wants_gpu(pipeline: PipelineConfig) -> bool:
    return pipeline.use_gpu == "true" or (pipeline.use_gpu == "auto" and torch.cuda.is_available())


def _trainer(settings: dict[str, Any], pipeline: PipelineConfig, run_name: str, workdir: Path):
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.worker import train_chain

    use_gpu = wants_gpu(pipeline)
    # Workers hold the CPUs; the driver and the gate hold none, so 2 workers fit on 2 cores.
    cpus = pipeline.worker_cpus or settings["threads"]
    resources = {"CPU": cpus, **({"GPU": 1} if use_gpu else {})}
    storage = pipeline.storage_path or str((workdir / "ray_results").resolve())
    return TorchTrainer(
        train_chain,
        train_loop_config=settings,
        scaling_config=ray.train.ScalingConfig(num_workers=pipeline.num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(name=run_name, storage_path=storage,
                                       failure_config=ray.train.FailureConfig(max_failures=pipeline.max_failures),
                                       worker_runtime_env={"env_vars": _forwarded_env()}),
    )


def _forwarded_env() -> dict[str, str]:
    """Registry and S3 settings of the driver, for workers of a Ray that was started before they were set."""
    return {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "AWS_"))}


class _Fit(threading.Thread):
    """`trainer.fit()` blocks until the whole chain is trained; the driver registers tasks meanwhile."""

    def __init__(self, trainer: Any):
        super().__init__(daemon=True)
        self.trainer, self.error = trainer, None

    def run(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as exc:  # reported by the driver loop, which is waiting on the gate
            self.error = exc


def _scholar_of(payload: dict[str, Any]) -> Scholar:
    scholar = scholar_from_spec(payload["spec"])
    scholar.load_state_dict(torch.load(io.BytesIO(payload["weights"]), weights_only=True))
    return scholar.eval()


def _register_task(ctx: dict[str, Any], task: Task, scholar: Scholar, metrics: dict[str, float],
                   matrix: Matrix, versions: list[str]) -> str:
    """Evaluate the new scholar on every task so far, log its nested run and register it."""
    config: Config = ctx["config"]
    tasks: list[Task] = ctx["tasks"]
    test_sets = [LabelledData.of([t], "test") for t in tasks[:task.index + 1]]
    accuracies = evaluate(scholar.solver, test_sets, Scenario(config.stream.scenario), task.info,
                          config.run.eval_batch_size)
    matrix.append(matrix_row(accuracies, len(tasks)))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        artifacts = {"accuracy_matrix.png": figures.accuracy_heatmap(matrix, folder / "accuracy_matrix.png")}
        if scholar.generator is not None:
            samples = scholar.sample(64, torch.Generator().manual_seed(task.index))
            artifacts["samples.png"] = figures.sample_grid(samples, folder / "samples.png")
        run_id = registry.log_task(ctx["parent_run"], ctx["experiment"], ctx["chain"], ctx["hash"], task.info,
                                   metrics, accuracies, artifacts)
        save_scholar(scholar, folder / "scholar")
        version = registry.register_scholar(ctx["chain"], run_id, folder / "scholar", task.info,
                                            versions[-1] if versions else None, ctx["hash"],
                                            fingerprint(task), accuracies)
    print(f"task {task.index} ({task.name}): accuracies {' '.join(f'{a:.4f}' for a in accuracies)}; "
          f"registered {ctx['chain']} version {version} (alias task-{task.index})", flush=True)
    return version


TaskHook = Callable[[int, Matrix], None]


class ChainStopped(Exception):
    """Raised by an `on_task` hook to end the chain after that task (a sweep's early stop): the workers
    are released, the chain run is marked KILLED, and `run_chain` raises it on."""


def run_chain(config: Config, pipeline: PipelineConfig, data_root: Path, workdir: Path, restart: bool = False,
              parent_run: str | None = None, on_task: TaskHook | None = None) -> ChainResult:
    """Train every task not yet registered; `on_task(k, matrix)` runs after task k is registered, while
    the workers wait for task k's release."""
    start = time.perf_counter()
    data_root, workdir = data_root.absolute(), workdir.absolute()  # workers and trials run elsewhere
    tasks = build_stream(config.stream, data_root, config.run.seed)  # bad data fails before Ray starts
    tracking_uri = registry.configure_tracking(workdir)
    experiment = registry.ensure_experiment(EXPERIMENT, workdir)
    chain, digest = pipeline.chain_name(config), config_hash(config)
    if restart:
        registry.clear_chain(chain)
    done = registry.chain_tasks(chain, digest)
    chain_run = registry.start_chain_run(chain, experiment, config, digest, parent_run)
    matrix: Matrix = [matrix_row(t.accuracies, len(tasks)) for t in done]
    versions = [t.version for t in done]
    train_seconds: list[float] = []
    register_seconds: list[float] = []
    if done and len(done) < len(tasks):
        registry.load_registered_scholar(chain, len(done) - 1)  # a corrupt checkpoint fails here, not in Ray
        print(f"resuming {chain} after task {len(done) - 1} (version {versions[-1]})", flush=True)
    if len(done) < len(tasks):
        ctx = {"config": config, "tasks": tasks, "chain": chain, "hash": digest,
               "experiment": experiment, "parent_run": chain_run, "on_task": on_task}
        try:
            train_seconds, register_seconds = _train_remaining(ctx, pipeline, data_root, workdir, tracking_uri,
                                                               len(done), matrix, versions)
        except BaseException as exc:
            registry.finish_chain_run(chain_run, status="KILLED" if isinstance(exc, ChainStopped) else "FAILED")
            raise
    registry.finish_chain_run(chain_run, average_accuracy(matrix))
    return ChainResult(chain, matrix, versions, time.perf_counter() - start, train_seconds, register_seconds)


def _ray_init_args() -> dict[str, Any]:
    """No RAY_ADDRESS: a new local Ray (never a stale `ray start` cluster's address file), whose workers
    import this checkout even when the project is not pip-installed. With RAY_ADDRESS: join that cluster
    (`ray job submit` sets it; the job's runtime env already provides the code)."""
    if os.environ.get("RAY_ADDRESS"):
        return {}
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"address": "local", "runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}}


def _train_remaining(ctx: dict[str, Any], pipeline: PipelineConfig, data_root: Path, workdir: Path,
                     tracking_uri: str, first: int, matrix: Matrix,
                     versions: list[str]) -> tuple[list[float], list[float]]:
    import ray

    from pipelines.gate import TaskGate

    if not ray.is_initialized():
        ray.init(**_ray_init_args())
    gate_name = f"gate-{ctx['chain']}-{uuid.uuid4().hex[:8]}"
    gate = TaskGate.options(name=gate_name, namespace=NAMESPACE).remote(first)
    settings = {"config": flatten(ctx["config"]), "data_root": str(data_root), "workdir": str(workdir),
                "tracking_uri": tracking_uri, "chain": ctx["chain"], "gate": gate_name, "namespace": NAMESPACE,
                "threads": pipeline.threads_per_worker, "log_every": 500,
                "fault": os.environ.get(FAULT_ENV, "")}
    fit = _Fit(_trainer(settings, pipeline, f"{ctx['chain']}-{ctx['hash']}", workdir))
    fit.start()
    train_seconds, register_seconds = [], []
    try:
        for task in ctx["tasks"][first:]:
            payload = None
            while payload is None:
                payload = ray.get(gate.wait_trained.remote(task.index, 2.0))
                if payload is None and not fit.is_alive():
                    raise RuntimeError(f"Ray Train stopped before task {task.index} was trained: {fit.error}")
            metrics = payload["metrics"]
            train_seconds.append(metrics["train_seconds"])
            registering = time.perf_counter()
            version = _register_task(ctx, task, _scholar_of(payload), metrics, matrix, versions)
            register_seconds.append(time.perf_counter() - registering)
            versions.append(version)
            registry.log_metrics(ctx["parent_run"], {"average_accuracy_so_far": average_accuracy(matrix),
                                                     "forgetting_so_far": mean_forgetting(matrix)}, step=task.index)
            if ctx["on_task"] is not None:
                ctx["on_task"](task.index, matrix)  # may raise ChainStopped: the workers are still waiting
            ray.get(gate.registered.remote(task.index, version))
    except BaseException:
        ray.get(gate.abort.remote())
        fit.join(timeout=60)
        raise
    fit.join()
    if fit.error is not None:
        raise RuntimeError(f"Ray Train failed after the last task: {fit.error}")
    ray.kill(gate)
    return train_seconds, register_seconds


def _print_result(summary: dict[str, Any]) -> None:
    print("accuracy matrix (row: after task i, column: task j)")
    for row in summary["accuracy_matrix"]:
        print("  " + " ".join("   -  " if a is None else f"{a:.4f}" for a in row))
    print(f"average accuracy {summary['average_accuracy']:.4f}  wall {summary['wall_seconds']:.1f} s  "
          f"registered model {summary['registered_model']} versions {', '.join(summary['versions'])}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Learn a stream of tasks with Deep Generative Replay on Ray Train.")
    p.add_argument("--config", type=Path, default=None, help="YAML config (default configs/split_mnist.yaml)")
    p.add_argument("--data-root", default=None, help="datasets root (default $DGR_DATA_ROOT or ./data)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--restart", action="store_true", help="start a new chain instead of resuming")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--workdir", type=Path, default=Path.cwd(), help="embedded MLflow store and Ray results")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store-creation notes are noise here
    try:
        config, pipeline = load_settings(args.config, args.set)
        result = run_chain(config, pipeline, resolve_data_root(args.data_root), args.workdir, args.restart)
    except (ConfigError, DatasetError, CheckpointError, registry.RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # Ray Train gave up; its own log above has the worker's traceback
        print(f"error: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
        return 1
    summary = result.summary()
    _print_result(summary)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
