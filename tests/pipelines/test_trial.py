"""A sweep trial hands each task's result to Tune, waits for its decision, and stops its chain cleanly.

The chain is a stand-in for `run_chain` (no Ray, no MLflow): it calls the hook after each task as the
real one does, while its workers wait for the task's release.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from pipelines import trial as trial_module
from pipelines.chain import ChainResult, ChainStopped

MATRIX = [[0.9, None, None], [0.8, 0.7, None], [0.6, 0.7, 0.8]]
VALIDATION = [[0.5, None, None], [0.4, 0.3, None], [0.2, 0.3, 0.4]]


class Chain:
    """Learns `tasks` (already registered: `done_before`) and records what the trial told it."""

    def __init__(self, done_before: int = 0, validation: Any = VALIDATION):
        self.done_before = done_before
        self.validation = validation
        self.events: list[str] = []

    def __call__(self, config: Any, settings: Any, data_root: Any, workdir: Any, parent_run: Any = None,
                 on_task: Any = None) -> ChainResult:
        try:
            for k in range(len(MATRIX)):  # registered tasks are reported again first, as run_chain does
                self.events.append(f"{'reported' if k < self.done_before else 'trained'} {k}")
                on_task(k, MATRIX[:k + 1], self.validation[:k + 1])
                self.events.append(f"released {k}")
        except ChainStopped:
            self.events.append("stopped")
            raise
        return ChainResult(settings.name, MATRIX, ["1", "2", "3"], 0.0)


@pytest.fixture
def make_trial(monkeypatch: pytest.MonkeyPatch):
    def make(chain: Callable[..., ChainResult]) -> trial_module.ChainTrial:
        monkeypatch.setattr(trial_module, "run_chain", chain)

        class Trial(trial_module.ChainTrial):
            def setup(self, config: dict[str, Any]) -> None:
                super().setup(config, base={"stream.name": "permuted_mnist", "stream.num_tasks": 3}, pipeline={},
                              data_root="/data", workdir="/work", sweep="sweep", sweep_run="run")

        return Trial(config={"replay.ratio": 0.5})
    return make


def test_each_step_is_one_task_and_the_chain_waits_for_the_next_step(make_trial) -> None:
    chain = Chain()
    trial = make_trial(chain)
    first = trial.train()
    assert (first["tasks"], first["average_accuracy"], first["done"]) == (1, 0.9, False)
    assert first["validation_accuracy"] == 0.5  # what the sweep selects on
    assert chain.events == ["trained 0"]  # task 1 waits for Tune's decision on task 0
    second = trial.train()
    assert (second["tasks"], second["done"]) == (2, False)
    assert second["average_accuracy"] == pytest.approx(0.75)
    assert second["forgetting"] == pytest.approx(0.1)
    assert second["validation_accuracy"] == pytest.approx(0.35)
    last = trial.train()
    assert (last["tasks"], last["done"], last["registered_model"]) == (3, True, trial.chain)
    trial.stop()  # a finished chain is released, not stopped
    assert chain.events[-1] == "released 2"


def test_a_stopped_trial_ends_its_chain_at_the_task_boundary(make_trial) -> None:
    chain = Chain()
    trial = make_trial(chain)
    trial.train()
    trial.stop()  # e.g. ASHA after the first task: returns once the chain has ended
    assert chain.events == ["trained 0", "stopped"]
    assert not trial._thread.is_alive()


def test_a_restored_trial_whose_chain_was_complete_reports_it_done(make_trial) -> None:
    chain = Chain(done_before=3)  # every task registered before the sweep was interrupted
    trial = make_trial(chain)
    results = [trial.train() for _ in range(3)]  # one step per task: ASHA's rungs stay task counts
    assert [(r["tasks"], r["done"]) for r in results] == [(1, False), (2, False), (3, True)]
    assert results[-1]["average_accuracy"] == pytest.approx(0.7)
    trial.stop()
    assert chain.events[-1] == "released 2"


def test_a_restored_trial_reports_the_tasks_tune_missed_then_trains_on(make_trial) -> None:
    chain = Chain(done_before=1)  # task 0 registered, then the sweep was interrupted before Tune saw it
    trial = make_trial(chain)
    first = trial.train()
    assert (first["tasks"], first["average_accuracy"]) == (1, 0.9)  # the grace period's result is not lost
    assert chain.events == ["reported 0"]
    assert trial.train()["tasks"] == 2
    assert chain.events[-1] == "trained 1"
    trial.stop()
    assert chain.events[-1] == "stopped"


def test_a_restored_trial_passes_over_tasks_tune_recorded(make_trial) -> None:
    chain = Chain(done_before=2)
    trial = make_trial(chain)
    trial._iteration = 2  # Tune restored the trial after two recorded steps
    result = trial.train()
    assert (result["tasks"], result["done"]) == (3, True)
    assert chain.events[-1] == "trained 2"
    trial.stop()


def test_a_failing_chain_fails_the_trial(make_trial) -> None:
    def broken(*args: Any, **kwargs: Any) -> ChainResult:
        raise RuntimeError("Ray Train stopped before task 0 was trained")

    trial = make_trial(broken)
    with pytest.raises(RuntimeError, match="Ray Train stopped"):
        trial.train()
    trial.stop()


def test_a_chain_without_validation_data_fails_the_trial(make_trial) -> None:
    """A sweep never selects on test accuracy: a stream with no validation split is an error, not a fallback."""
    trial = make_trial(Chain(validation=[]))
    with pytest.raises(ValueError, match="stream.validation"):
        trial.train()
    trial.stop()
