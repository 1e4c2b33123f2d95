"""The Ray Train worker loop: each rank trains the chain's tasks with DDP, one task after the other.

Per task: load the previous scholar from the MLflow registry (frozen, never in DDP nor an optimizer),
train the new scholar on this rank's shard with this rank's replay samples (`dgr.train_task`), rank 0
writes the checkpoint and posts the scholar to the driver, every rank reports, all wait until the driver
has registered it.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dgr.checkpoint import save_scholar
from dgr.config import Config, from_flat
from dgr.scenario import Scenario, output_size
from dgr.scholar import Scholar, new_scholar
from dgr.sequence import remember, replay_source, training_data
from dgr.streams import Task, build_stream
from dgr.targets import LabelledData
from dgr.training import Progress, train_task
from pipelines import registry


def _ddp(device: torch.device, world_size: int):
    def wrap(module: nn.Module) -> nn.Module:
        if world_size == 1:
            return module
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    return wrap


def _stored(config: Config, tasks: list[Task], upto: int) -> LabelledData | None:
    stored = None
    for task in tasks[:upto]:
        stored = remember(config, stored, task)
    return stored


def _starting_scholar(config: Config, chain: str, tasks: list[Task], k: int, device: torch.device) -> Scholar:
    if k == 0:
        outputs = output_size(Scenario(config.stream.scenario), [t.info for t in tasks])
        return new_scholar(config, tasks[0].input_shape, outputs).to(device)
    return registry.load_registered_scholar(chain, k - 1, device)


def _fault(spec: str, rank: int) -> tuple[int, int, Path] | None:
    """Fault injection for failure tests: "task:iteration:marker" kills rank 1 once at that point."""
    if not spec or rank != 1:
        return None
    task, iteration, marker = spec.split(":", 2)
    return int(task), int(iteration), Path(marker)


def train_chain(settings: dict[str, Any]) -> None:
    """`train_loop_per_worker` of the chain's TorchTrainer. `settings` is plain data from the driver."""
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(settings["threads"])
    os.environ["MLFLOW_TRACKING_URI"] = settings["tracking_uri"]
    registry.configure_tracking(Path(settings["workdir"]))
    config = from_flat(settings["config"])
    device = ray.train.torch.get_device()
    tasks = build_stream(config.stream, settings["data_root"], config.run.seed)
    gate = ray.get_actor(settings["gate"], namespace=settings["namespace"])
    log_every = settings["log_every"]

    die_at = _fault(settings["fault"], rank)

    def progress(event: Progress) -> None:
        if die_at is not None and (event.task, event.iteration) >= die_at[:2] and not die_at[2].exists():
            die_at[2].touch()  # once: the retried worker group must get through
            os._exit(1)
        if rank == 0 and event.iteration % log_every == 0:
            losses = " ".join(f"{k} {v:.4f}" for k, v in event.losses.items())
            print(f"task {event.task} iteration {event.iteration}/{event.iterations} {losses}", flush=True)

    while (k := ray.get(gate.next_task.remote())) < len(tasks):
        scholar = _starting_scholar(config, settings["chain"], tasks, k, device)
        previous = scholar.frozen_copy() if k else None
        stored = _stored(config, tasks, k)
        infos = [t.info for t in tasks]
        replay = replay_source(config, previous, infos[:k], infos[k], stored, device)
        data = training_data(config, stored, tasks[k])
        training = train_task(scholar, data, infos[k], config, replay, rank=rank, world_size=world_size,
                              device=device, wrap=_ddp(device, world_size), callback=progress,
                              log_every=min(log_every, 10) if die_at else log_every)
        metrics = {"task": k, "rank": rank, "train_seconds": training.seconds,
                   "iterations_per_second": training.iterations_per_second,
                   **{f"loss_{name}": value for name, value in training.losses.items()}}
        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                save_scholar(scholar, Path(folder) / "scholar")
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                                 checkpoint_dir_name=f"task-{k}")
            # Bytes, not tensors: the gate then never imports torch to pass them on (seconds per chain).
            weights = io.BytesIO()
            torch.save({name: t.detach().cpu() for name, t in scholar.state_dict().items()}, weights)
            ray.get(gate.trained.remote(k, {"spec": scholar.spec, "weights": weights.getvalue(),
                                            "metrics": metrics}))
        else:
            ray.train.report(metrics)
        if not ray.get(gate.wait_registered.remote(k)):
            return  # the driver gave up on the chain and reports why
