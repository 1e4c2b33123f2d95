"""The chain's Ray Train worker group: one `TorchTrainer` whose `fit()` trains every remaining task.

`fit()` blocks until the whole chain is trained, so it runs in a thread while the driver registers the
tasks it is handed. The trainer reports no checkpoints (the MLflow registry holds every scholar), so only
Ray Train's controller, which Ray places on the driver's node, writes under `storage_path`.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from pipelines.cluster import WorkerPlan
from pipelines.credentials import shared_settings


def chain_trainer(settings: dict[str, Any], plan: WorkerPlan, max_failures: int, run_name: str, storage: str,
                  loop: Callable[[dict[str, Any]], None] | None = None):
    """The chain's trainer; `loop` replaces the worker loop (`benchmarks/pipeline_overhead.py`'s floor)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.worker import train_chain

    return TorchTrainer(
        loop or train_chain,
        train_loop_config=settings,
        scaling_config=ray.train.ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                               resources_per_worker=plan.resources()),
        run_config=ray.train.RunConfig(name=run_name, storage_path=storage,
                                       failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                       # for workers of a Ray started before these were set; their
                                       # credentials come from their own environment (see README)
                                       worker_runtime_env={"env_vars": shared_settings()}),
    )


class Fit(threading.Thread):
    """`trainer.fit()` in a thread; the driver loop, waiting on the gate, reports its error."""

    def __init__(self, trainer: Any):
        super().__init__(daemon=True)
        self.trainer, self.error = trainer, None

    def run(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as exc:  # reported by the driver loop, which is waiting on the gate
            self.error = exc
