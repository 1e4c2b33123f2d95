"""The single-process sequence runner: learn a stream task by task, evaluate after each.

For each task t: the new scholar starts as a copy of the previous one, the previous scholar is frozen
for replay, `train_task` trains the new one, and every task so far is evaluated. Only the scholar (and
the test sets, for evaluation) survive a task under GR and None; ER and Joint keep past training data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from dgr.config import Config
from dgr.evaluation import Matrix, average_accuracy, backward_transfer, evaluate, forgetting, matrix_row
from dgr.replay import ExactReplay, GenerativeReplay, ReplayArm, ReplaySource, TargetKind
from dgr.scenario import Scenario, output_size
from dgr.scholar import Scholar, new_scholar
from dgr.streams import Task, TaskInfo
from dgr.targets import LabelledData
from dgr.training import Progress, TaskTraining, check_finite, train_task


@dataclass(frozen=True)
class TaskEvaluated:
    """Reported through the callback after each task."""

    task: int
    accuracies: list[float]
    training: TaskTraining
    validation: list[float] = field(default_factory=list)  # on every task so far, when the stream holds some out
    scholar: Scholar | None = None  # the live scholar after the task: read it (audit, sample), never train it


@dataclass
class SequenceResult:
    accuracy_matrix: Matrix
    average_accuracy: float
    forgetting: list[float]
    backward_transfer: float
    wall_seconds: float
    training: list[TaskTraining] = field(default_factory=list)
    scholar: Scholar | None = None
    validation_matrix: Matrix = field(default_factory=list)  # like accuracy_matrix; empty without validation data


def resolve_device(config: Config) -> torch.device:
    if config.run.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.run.device)


def replay_source(config: Config, previous: Scholar | None, past: Sequence[TaskInfo], latest: TaskInfo,
                  stored: LabelledData | None, device: torch.device | str = "cpu") -> ReplaySource | None:
    """What learning `latest` after `past` replays: nothing for the first task, None and Joint."""
    arm = ReplayArm(config.replay.arm)
    scenario = Scenario(config.stream.scenario)
    if not past or arm in (ReplayArm.NONE, ReplayArm.JOINT):
        return None
    if arm is ReplayArm.ER:
        assert stored is not None, "exact replay needs the stored past data"
        return ExactReplay(stored, scenario, latest, device)
    assert previous is not None, "generative replay needs the previous scholar"
    kind = TargetKind(config.replay.targets)
    return GenerativeReplay(previous, scenario, past, latest, kind, config.replay.temperature)


def remember(config: Config, stored: LabelledData | None, task: Task) -> LabelledData | None:
    """Past training data kept after `task`: all of it for ER and Joint, none for GR and None."""
    if ReplayArm(config.replay.arm) not in (ReplayArm.ER, ReplayArm.JOINT):
        return None
    new = LabelledData.of([task])
    if stored is None:
        return new
    tasks = stored.tasks + new.tasks
    ids = torch.cat([stored.task_ids, new.task_ids + len(stored.tasks)])
    return LabelledData(torch.cat([stored.x, new.x]), torch.cat([stored.y, new.y]), ids, tasks)


def training_data(config: Config, stored: LabelledData | None, task: Task) -> LabelledData:
    """The new task's data; Joint trains on the union of every task so far."""
    if ReplayArm(config.replay.arm) is ReplayArm.JOINT:
        joined = remember(config, stored, task)
        assert joined is not None
        return joined
    return LabelledData.of([task])


def validation_set(task: Task) -> LabelledData | None:
    """The task's held-out training data (`stream.validation`), or None when it has none."""
    if task.valid_x is None or task.valid_y is None:
        return None
    return LabelledData(task.valid_x, task.valid_y, torch.zeros(len(task.valid_y), dtype=torch.long), (task.info,))


Callback = Callable[["Progress | TaskEvaluated"], None]


def run_sequence(config: Config, tasks: Iterable[Task], outputs: int | None = None,
                 num_tasks: int | None = None, callback: Callback | None = None) -> SequenceResult:
    """Learn `tasks` in order. `tasks` may be lazy; then give `outputs` and `num_tasks`."""
    if outputs is None or num_tasks is None:
        tasks = list(tasks)
        outputs = output_size(Scenario(config.stream.scenario), [t.info for t in tasks])
        num_tasks = len(tasks)
    device = resolve_device(config)
    scenario = Scenario(config.stream.scenario)
    start = time.perf_counter()
    scholar: Scholar | None = None
    stored: LabelledData | None = None
    past: list[TaskInfo] = []
    test_sets: list[LabelledData] = []
    valid_sets: list[LabelledData] = []
    matrix: Matrix = []
    valid_matrix: Matrix = []
    trainings: list[TaskTraining] = []
    for task in tasks:
        if scholar is None:
            scholar = new_scholar(config, task.input_shape, outputs).to(device)
        previous = scholar.frozen_copy() if past else None
        replay = replay_source(config, previous, past, task.info, stored, device)
        data = training_data(config, stored, task)
        training = train_task(scholar, data, task.info, config, replay, device=device, callback=callback)
        check_finite(task.index, training.losses)
        stored = remember(config, stored, task)
        del data, replay, previous
        past.append(task.info)
        test_sets.append(LabelledData.of([task], "test"))
        accuracies = evaluate(scholar.solver, test_sets, scenario, task.info, config.run.eval_batch_size, device)
        matrix.append(matrix_row(accuracies, num_tasks))
        trainings.append(training)
        valid = validation_set(task)
        validation = []
        if valid is not None:
            valid_sets.append(valid)
            validation = evaluate(scholar.solver, valid_sets, scenario, task.info, config.run.eval_batch_size, device)
            valid_matrix.append(matrix_row(validation, num_tasks))
        if callback is not None:
            callback(TaskEvaluated(task.index, accuracies, training, validation, scholar))
    return SequenceResult(matrix, average_accuracy(matrix), forgetting(matrix), backward_transfer(matrix),
                          time.perf_counter() - start, trainings, scholar, valid_matrix)
