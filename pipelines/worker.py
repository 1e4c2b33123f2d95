"""The Ray Train worker loop: each rank trains the chain's tasks with DDP, one task after the other.

A worker group starts where rank 0's question to the driver's gate says (the first unregistered task;
every rank is told the same, so DDP never averages gradients of two tasks) and loads the previous scholar
from the MLflow registry (frozen, never in DDP nor an optimizer). Per task: each rank trains the scholar
on its shard with its own replay samples (`dgr.train_task`), rank 0 logging its losses on the task's MLflow
run; every rank reports its metrics (no Ray checkpoint: the registry is the checkpoint) and takes rank 0's
weights, which rank 0 posts to the driver. The next task starts from them at once while the driver
registers them (`run_ahead`, the main job), or once they are registered (a sweep trial, whose scheduler
may stop the chain there); the workers are never more than one task ahead of the registry.
"""

from __future__ import annotations

import functools
import importlib
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import ray
import ray.train
import ray.train.torch
import torch
from ray.train.collective import broadcast_from_rank_zero
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dgr.config import Config, from_flat
from dgr.scenario import Scenario, output_size
from dgr.scholar import Scholar, new_scholar
from dgr.sequence import remember, replay_source, training_data
from dgr.streams import Task, iter_stream, stream_infos
from dgr.targets import LabelledData
from dgr.training import Progress, train_task
from pipelines import registry, tracking

# Ray Train prints a worker's `print` twice (its print patch logs it and tees it to the wrapped stdout);
# a logger reaches Train's console handler once.
log = logging.getLogger("dgr.worker")
Hook = Callable[[int, Progress], None]  # (rank, progress): tests only, e.g. a worker that dies once


def _ddp(device: torch.device, world_size: int):
    def wrap(module: nn.Module) -> nn.Module:
        if world_size == 1:
            return module
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    return wrap


class TaskFeed:
    """A worker's tasks, built one at a time from the stream's sources: a worker holds the real data of the
    task it trains and, under ER and Joint only, the past data those arms keep by design; never the stream.
    `at(k)` expects k to grow (a worker group trains its tasks in order); a smaller k starts over."""

    def __init__(self, config: Config, data_root: str | Path):
        self.config, self.data_root = config, data_root
        self.infos = stream_infos(config.stream, data_root, config.run.seed)
        self._restart()

    def _restart(self) -> None:
        self._tasks: Iterator[Task] = iter_stream(self.config.stream, self.data_root, self.config.run.seed)
        self._next = 0
        self.stored: LabelledData | None = None  # what the arm keeps of the tasks before the current one
        self._current: Task | None = None

    def at(self, k: int) -> Task:
        if k < self._next - 1:
            self._restart()
        while self._next <= k:
            if self._current is not None:
                self.stored = remember(self.config, self.stored, self._current)
            self._current = None  # drop the previous task before the next one is built
            self._current = next(self._tasks)
            self._next += 1
        assert self._current is not None
        return self._current


def _starting_scholar(config: Config, chain: str, feed: TaskFeed, task: Task, device: torch.device) -> Scholar:
    if task.index == 0:
        outputs = output_size(Scenario(config.stream.scenario), feed.infos)
        return new_scholar(config, task.input_shape, outputs).to(device)
    return registry.load_registered_scholar(chain, task.index - 1, device)


def load_hook(spec: Mapping[str, Any] | None) -> Hook | None:
    """`{"target": "module:function", "kwargs": {...}}` from the driver's settings, or None."""
    if not spec:
        return None
    module, _, name = spec["target"].partition(":")
    return functools.partial(getattr(importlib.import_module(module), name), **spec.get("kwargs", {}))


def _progress(rank: int, log_every: int, hook: Hook | None, run_id: str) -> Callable[[Progress], None]:
    """Rank 0 logs the losses every `log_every` iterations and at the end: a line and a point on the
    task run's loss curves (step = iteration)."""
    def report(event: Progress) -> None:
        if rank == 0 and (event.iteration % log_every == 0 or event.iteration == event.iterations):
            losses = " ".join(f"{k} {v:.4f}" for k, v in event.losses.items())
            log.info("task %d iteration %d/%d %s", event.task, event.iteration, event.iterations, losses)
            try:
                tracking.log_losses(run_id, event.losses, event.iteration)
            except tracking.RegistryError as exc:  # a lost point of a curve is not worth the task
                log.warning("task %d: loss curve point not logged: %s", event.task, exc)

    if hook is None:
        return report

    def hooked(event: Progress) -> None:
        hook(rank, event)
        report(event)
    return hooked


def _node_ids(world_size: int) -> list[str]:
    """The Ray node of every rank, in rank order."""
    node = ray.get_runtime_context().get_node_id()
    if world_size == 1:
        return [node]
    nodes: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(nodes, node)
    return nodes


def _rank0_answer(rank: int, method: Any, *args: Any) -> Any:
    """Rank 0 asks the gate (`method`, an actor method) and tells the others: ranks asking one by one
    could get different answers while the driver registers a task, and DDP would then average gradients
    of two tasks."""
    return broadcast_from_rank_zero(ray.get(method.remote(*args)) if rank == 0 else None)


def _take_rank0_weights(scholar: Scholar, world_size: int) -> None:
    """Every rank continues from exactly what rank 0 posts (batch-norm statistics, say, drift per rank)."""
    if world_size > 1:
        with torch.no_grad():
            for tensor in scholar.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)


def _quiet_report_lines() -> None:
    """Ray Train 2.60 logs every `ray.train.report` of every rank as an INFO line holding the whole metrics
    dict, beside the worker's own line for the same task's end. Its logger is named by its module's file
    path, which Train's log-level setting (for `ray.train.*` names) does not reach; it logs nothing else
    at INFO, and its warnings still show."""
    module = sys.modules.get("ray.train.v2._internal.execution.context")
    if module is not None and module.__file__:
        logging.getLogger(module.__file__).setLevel(logging.WARNING)


def train_chain(settings: dict[str, Any]) -> None:
    """`train_loop_per_worker` of the chain's TorchTrainer. `settings` is plain data from the driver."""
    _quiet_report_lines()
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(settings["threads"])
    if settings["tracking_uri"]:
        os.environ["MLFLOW_TRACKING_URI"] = settings["tracking_uri"]
    elif not os.environ.get("MLFLOW_TRACKING_URI"):  # withheld by the driver: it carries a password
        raise RuntimeError("MLFLOW_TRACKING_URI holds a password, so the driver does not pass it on: set it "
                           "in the Ray nodes' own environment")
    tracking.configure_tracking(Path(settings["workdir"]))
    config = from_flat(settings["config"])
    device = ray.train.torch.get_device()
    feed = TaskFeed(config, settings["data_root"])
    gate = ray.get_actor(settings["gate"], namespace=settings["namespace"])
    hook = load_hook(settings.get("hook"))
    nodes = _node_ids(world_size)

    k = _rank0_answer(rank, gate.next_task)  # None once the driver gave up on the chain
    scholar: Scholar | None = None
    unconfirmed: list[int] = []  # tasks posted to the driver and not yet registered
    while k is not None and k < len(feed.infos):
        run_id = _rank0_answer(rank, gate.task_run, k)
        if not run_id:  # "" for every rank
            return  # the driver gave up on the chain and reports why
        progress = _progress(rank, settings["log_every"], hook, run_id)
        task = feed.at(k)
        if scholar is None:
            scholar = _starting_scholar(config, settings["chain"], feed, task, device)
        previous = scholar.frozen_copy() if k else None
        replay = replay_source(config, previous, feed.infos[:k], task.info, feed.stored, device)
        data = training_data(config, feed.stored, task)
        training = train_task(scholar, data, task.info, config, replay, rank=rank, world_size=world_size,
                              device=device, wrap=_ddp(device, world_size), callback=progress,
                              log_every=1 if hook else settings["log_every"])
        metrics = {"task": k, "rank": rank, "train_seconds": training.seconds,
                   "iterations_per_second": training.iterations_per_second,
                   **{f"loss_{name}": value for name, value in training.losses.items()}}
        del task, data, replay, previous  # the next task is built without this one's data still referenced
        ray.train.report(metrics)
        _take_rank0_weights(scholar, world_size)
        if rank == 0:
            # Bytes, not tensors: the gate then never imports torch to pass them on (seconds per chain).
            weights = io.BytesIO()
            torch.save({name: t.detach().cpu() for name, t in scholar.state_dict().items()}, weights)
            ray.get(gate.trained.remote(k, {"spec": scholar.spec, "weights": weights.getvalue(),
                                            "metrics": metrics, "nodes": nodes}))
        unconfirmed.append(k)
        k += 1
        ahead = 1 if settings["run_ahead"] and k < len(feed.infos) else 0
        while len(unconfirmed) > ahead:
            if not ray.get(gate.wait_registered.remote(unconfirmed.pop(0))):
                return  # the driver gave up on the chain and reports why
