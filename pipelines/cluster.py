"""What the driver learns from the Ray cluster it joins: its nodes' resources, and the workers to ask for.

`auto` settings are decided here, from the cluster's nodes as `ray.nodes()` lists them after `ray.init`,
never from the driver's own machine: under `ray job submit` the driver runs on the head node, which in
`ray_cluster.yaml` has no GPU while the workers' nodes do.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from dgr.config import ConfigError
from pipelines.settings import AUTO, PipelineConfig

Node = Mapping[str, float]  # a node's total resources: {"CPU": 8.0, "GPU": 1.0, ...}
TRIAL_CPU = 0.01  # a sweep trial's own driver; measured on 2 CPUs: a trial holding a CPU starves its workers
CHECKOUT = Path(__file__).resolve().parents[1]  # the code this driver runs, for a local Ray's workers


@dataclass(frozen=True)
class WorkerPlan:
    """The chain's worker group: how many workers, and what each reserves and uses."""

    num_workers: int
    threads: int  # torch threads per worker
    cpus: float  # CPUs each worker reserves
    gpus: float  # GPUs each worker reserves; 0 means CPU workers (gloo), else NCCL
    run_ahead: bool = False  # the workers train task k+1 while the driver registers task k

    @property
    def use_gpu(self) -> bool:
        return self.gpus > 0

    def resources(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.use_gpu else {})}

    def describe(self) -> str:
        gpus = f" and {self.gpus:g} GPU" if self.use_gpu else ""
        ahead = ("training each task while the driver registers the one before" if self.run_ahead else
                 "waiting while the driver registers each task")
        return f"{self.num_workers} worker(s) x {self.threads} thread(s), each holding {self.cpus:g} CPU{gpus}; {ahead}"


# Ray Train's preemption watcher (an actor per worker group) polls the cluster for nodes being drained, as
# spot nodes are before they go; a local Ray is one machine that nothing drains. It also logs an error line
# at every start (ray-project/ray#53727). A value in the driver's environment still wins: Ray Train
# passes its own variables on to its controller over the job's.
LOCAL_RAY_TRAIN = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def ray_init_args() -> dict[str, Any]:
    """No RAY_ADDRESS: a new local Ray (never a stale `ray start` cluster's address file), whose workers
    import this checkout. With RAY_ADDRESS: join that cluster (`ray job submit` sets it, and its
    working_dir puts the code first on the job's PYTHONPATH).

    The local Ray keeps its dashboard, though it is about ten processes: Ray Train's placement-group
    cleaner asks the dashboard's state API about the controller every second and logs a warning each
    time it cannot."""
    if os.environ.get("RAY_ADDRESS"):
        return {}
    paths = [str(CHECKOUT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"address": "local", "runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join(paths),
                                                             **LOCAL_RAY_TRAIN}}}


_LOCAL_RAYS: set[str] = set()  # GCS addresses of the local Rays this process started


def join_ray() -> bool:
    """Join (or start, see `ray_init_args`) Ray; True when it is a local Ray this process started, whose
    nodes no autoscaler adds to (a worker group they cannot hold would wait for ever: `check_placeable`)."""
    import ray

    if not ray.is_initialized():
        args = ray_init_args()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        ray.init(**args)
        # ray.init takes SIGTERM over (and its crash handler then aborts the driver mid-cleanup): a handler
        # of the caller's (`dgr-sequence`: SIGTERM as Ctrl-C) stands; without one, Ray's exits.
        if main and callable(previous):
            signal.signal(signal.SIGTERM, previous)
        if args.get("address") == "local":
            _LOCAL_RAYS.add(ray.get_runtime_context().gcs_address)
    return ray.get_runtime_context().gcs_address in _LOCAL_RAYS


def alive_nodes() -> list[dict[str, float]]:
    import ray

    return [node["Resources"] for node in ray.nodes() if node["Alive"]]


def driver_node() -> dict[str, float]:
    """The resources of the node this driver runs on (the head, under `ray job submit`)."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    return next((node["Resources"] for node in ray.nodes() if node["NodeID"] == here), {})


def wants_gpu(use_gpu: str, nodes: Sequence[Node]) -> bool:
    if use_gpu == AUTO:
        return any(node.get("GPU", 0.0) > 0 for node in nodes)
    return use_gpu == "true"


def plan_workers(pipeline: PipelineConfig, nodes: Sequence[Node], driver: Node | None = None) -> WorkerPlan:
    """Resolve `auto`: on a GPU cluster one worker per GPU (or one worker on a fraction of a GPU), each
    with the CPUs that come with its GPU share; without GPUs one worker with every CPU of the largest node
    (on 2 cores one worker x 2 threads beats two x 1: gloo's all-reduce costs more than it splits).
    `driver` is the driver's node, for `run_ahead` (see `runs_ahead`)."""
    if wants_gpu(pipeline.use_gpu, nodes):
        workers, gpus = _gpu_workers(pipeline, nodes), pipeline.gpus_per_worker
        shares = [node.get("CPU", 0.0) * gpus / node["GPU"] for node in nodes if node.get("GPU", 0.0) > 0]
        share = math.floor(min(shares) * 100) / 100 if shares else 1.0
    else:
        workers, gpus = (1 if pipeline.num_workers == AUTO else pipeline.num_workers), 0.0
        share = float(_whole_cpus_each(workers, [node.get("CPU", 0.0) for node in nodes]))
    threads = pipeline.threads_per_worker
    cpus = pipeline.worker_cpus or (share if threads == AUTO else threads)
    return WorkerPlan(workers, max(1, int(cpus)) if threads == AUTO else threads, cpus, gpus,
                      runs_ahead(pipeline.run_ahead, workers * cpus, gpus, driver))


def check_placeable(plan: WorkerPlan, nodes: Sequence[Node], pipeline: PipelineConfig) -> None:
    """For a Ray that cannot grow (the local one a driver starts): a worker group its nodes cannot hold
    would wait for ever, so name the setting that asks too much. A cluster's autoscaler may add nodes."""
    if plan.use_gpu and not any(node.get("GPU", 0.0) > 0 for node in nodes):
        raise ConfigError("pipeline.use_gpu: true, but this machine's Ray has no GPU; use auto or false")

    def holds(node: Node) -> float:  # how many of the workers the node can hold
        each = [node.get("CPU", 0.0) / plan.cpus if plan.cpus else math.inf]  # 0: a GPU node without CPUs
        if plan.use_gpu:
            each.append(node.get("GPU", 0.0) / plan.gpus)
        return math.floor(min(each) + 1e-9)

    if sum(holds(node) for node in nodes) >= plan.num_workers:
        return
    field = ("pipeline.worker_cpus" if pipeline.worker_cpus else
             "pipeline.threads_per_worker" if pipeline.threads_per_worker != AUTO else "pipeline.num_workers")
    gpus = f" and {plan.gpus:g} GPU" if plan.use_gpu else ""
    largest = max(nodes, key=lambda node: node.get("CPU", 0.0), default={})
    raise ConfigError(f"{field}: {plan.num_workers} worker(s) holding {plan.cpus:g} CPU{gpus} each do not fit "
                      f"on this machine's Ray (largest node: {largest.get('CPU', 0.0):g} CPU, "
                      f"{largest.get('GPU', 0.0):g} GPU); ask for less")


def runs_ahead(setting: str, worker_cpus: float, gpus: float, driver: Node | None) -> bool:
    """`auto`: the workers train the next task while the driver registers the last one when that takes
    them no CPU: they train on GPUs, or the driver's node keeps a CPU they do not reserve (or reserves
    none for them, like a head started with `--num-cpus 0`). Where the driver shares the workers' cores
    it gains nothing: on 2 cores its evaluation and audit slow the training loops by about as much time as
    the overlap hides (README, "The pipeline against the core")."""
    if setting != AUTO:
        return setting == "true"
    if gpus > 0:
        return True
    if driver is None:
        return False
    cpus = driver.get("CPU", 0.0)
    return cpus == 0 or cpus - worker_cpus >= 1


def _gpu_workers(pipeline: PipelineConfig, nodes: Sequence[Node]) -> int:
    fraction = pipeline.gpus_per_worker < 1
    if pipeline.num_workers != AUTO:
        if fraction and pipeline.num_workers > 1:
            raise ConfigError(f"pipeline.gpus_per_worker: {pipeline.gpus_per_worker:g} (a fraction of a GPU) "
                              f"needs pipeline.num_workers = 1: NCCL cannot run two ranks on one GPU")
        return pipeline.num_workers
    if fraction:
        return 1
    workers = int(sum(node.get("GPU", 0.0) for node in nodes))
    if workers == 0:
        raise ConfigError("pipeline.num_workers: auto found no GPU in the Ray cluster; set pipeline.num_workers "
                          "(an autoscaler then adds GPU nodes) or pipeline.use_gpu = false")
    return workers


def _whole_cpus_each(workers: int, node_cpus: Sequence[float]) -> int:
    """The most whole CPUs each of `workers` workers can hold with all of them placed on the nodes."""
    for each in range(int(max(node_cpus, default=0.0)), 0, -1):
        if sum(int(cpus // each) for cpus in node_cpus) >= workers:
            return each
    return 1  # the cluster cannot hold them now: one CPU each, and Ray (or its autoscaler) waits


def trial_plan(pipeline: PipelineConfig, nodes: Sequence[Node]) -> WorkerPlan:
    """A sweep trial's workers. `auto` means one worker per trial, with one thread on a CPU cluster (small
    trials side by side use the cores better than one trial on all of them). Workers hold 99 % of their
    CPUs and the trial the rest, so a trial with one worker needs exactly one CPU."""
    gpu = wants_gpu(pipeline.use_gpu, nodes)
    single = replace(pipeline, num_workers=1 if pipeline.num_workers == AUTO else pipeline.num_workers,
                     threads_per_worker=1 if pipeline.threads_per_worker == AUTO and not gpu
                     else pipeline.threads_per_worker)
    plan = replace(plan_workers(single, nodes), run_ahead=False)  # the trial's scheduler decides after each task
    return plan if pipeline.worker_cpus else replace(plan, cpus=round(plan.cpus * (1 - TRIAL_CPU), 4))


def pinned(pipeline: PipelineConfig, plan: WorkerPlan) -> PipelineConfig:
    """`pipeline` with `plan` written out, so whoever resolves it again (a trial) gets the same plan."""
    return replace(pipeline, num_workers=plan.num_workers, threads_per_worker=plan.threads, worker_cpus=plan.cpus,
                   use_gpu="true" if plan.use_gpu else "false", gpus_per_worker=plan.gpus or pipeline.gpus_per_worker,
                   run_ahead="true" if plan.run_ahead else "false")


def trial_slots(nodes: Sequence[Node], plan: WorkerPlan) -> int:
    """How many trials' worker groups fit in the cluster at once (at least 1). More trials would start
    anyway (a trial holds only 0.01 CPU) and wait inside their TorchTrainer, each a process holding memory."""
    def fits(resource: str, per_trial: float) -> int:
        total = sum(node.get(resource, 0.0) for node in nodes)
        return math.floor(total / per_trial + 1e-9)  # not `//`: 1.0 // 0.1 is 9.0

    slots = fits("CPU", TRIAL_CPU + plan.num_workers * plan.cpus)
    if plan.use_gpu:
        slots = min(slots, fits("GPU", plan.num_workers * plan.gpus))
    return max(1, slots)
