"""One Tune trial of a sweep: a whole task chain, reported task by task, stopped cleanly by the scheduler.

A class trainable rather than a function trainable, for one reason: when ASHA stops a function trainable,
Tune ends its thread with `SystemExit` inside `tune.report` and tears the trial actor down at once, so
the chain's Ray Train run dies with it and its placement group is left to Ray Train's cleaner actor,
which needs the state API (the dashboard). Where that is not reachable the workers' CPUs stay reserved
and the next trial waits forever for them (seen here on 2 CPUs). Here Tune's `stop` calls `cleanup`,
which ends the chain at the task boundary and waits for its worker group to shut down and hand its
resources back before the actor goes.

The chain runs in a thread (`run_chain` blocks until its last task). After each task its hook hands the
result to `step` and waits for Tune's decision: go on (the next `step`) or stop (`cleanup`).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from ray import tune

from dgr.config import from_flat
from dgr.evaluation import Matrix, average_accuracy, mean_forgetting
from pipelines.chain import ChainStopped, run_chain
from pipelines.settings import PipelineConfig

_GO, _STOP = "go", "stop"


class ChainTrial(tune.Trainable):
    """`step` returns the metrics of the next task of the chain: `tasks`, `validation_accuracy` (what the
    sweep selects on), `average_accuracy` (on test data, reported only) and `forgetting`."""

    def setup(self, config: dict[str, Any], base: dict[str, Any], pipeline: dict[str, Any], data_root: str,
              workdir: str, sweep: str, sweep_run: str) -> None:
        chain_config = from_flat({**base, **config})
        self.chain = f"{sweep}-{self.trial_id}"
        settings = PipelineConfig(**{**pipeline, "name": self.chain})
        self._results: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        self._decisions: queue.Queue[str] = queue.Queue()
        self._reported = False  # after a result the chain waits for a decision
        self._last_reported = False  # the chain's thread reported its last task

        def chain() -> None:
            try:
                run_chain(chain_config, settings, Path(data_root), Path(workdir), parent_run=sweep_run,
                                 on_task=self._on_task)
            except ChainStopped:
                return
            except BaseException as exc:  # re-raised by `step`: Tune marks the trial errored
                self._results.put(exc)
                return

        self._thread = threading.Thread(target=chain, name=f"chain-{self.chain}", daemon=True)
        self._thread.start()

    def _metrics(self, task: int, matrix: Matrix, validation: Matrix) -> dict[str, Any]:
        if len(validation) != len(matrix):
            raise ValueError(f"{self.chain}: task {task} has no validation accuracies; a sweep needs "
                             "stream.validation > 0")
        return {"tasks": task + 1, "validation_accuracy": average_accuracy(validation),
                "average_accuracy": average_accuracy(matrix),
                "forgetting": mean_forgetting(matrix), "registered_model": self.chain,
                "done": task + 1 == len(matrix[-1])}

    def _on_task(self, task: int, matrix: Matrix, validation: Matrix) -> None:
        metrics = self._metrics(task, matrix, validation)
        self._last_reported = metrics["done"]
        self._results.put(metrics)
        if self._decisions.get() == _STOP:
            raise ChainStopped(f"{self.chain}: stopped by the scheduler after task {task}")

    def step(self) -> dict[str, Any]:
        """The chain's next task. A restored trial's chain first reports the tasks its registry already
        holds; those Tune recorded before (up to its restored iteration) are passed over."""
        while True:
            if self._reported:
                self._decisions.put(_GO)
            result = self._results.get()
            if isinstance(result, BaseException):
                raise result
            self._reported = True
            if result["tasks"] > self.iteration or result["done"]:
                return result

    def cleanup(self) -> None:
        """Tune's stop: let a finished chain close, stop any other at its next task boundary, then wait
        until its Ray Train run has ended (an extra decision for a chain that already ended is ignored)."""
        self._decisions.put(_GO if self._last_reported else _STOP)
        self._thread.join()
