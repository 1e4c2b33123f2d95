"""The Tune sweep: bad search spaces fail at once; a 4-trial sweep on 2 CPUs stops hopeless trials early,
gives their resources back, and marks the best trial's final scholar."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from dgr.config import ConfigError
from dgr.streams import TaskInfo
from pipelines import search_space, tracking
from pipelines import sweep as sweep_module
from pipelines.cluster import CHECKOUT
from pipelines.search_space import parse_sweep
from pipelines.settings import load_settings
from pipelines.sweep import main
from tests.pipelines.conftest import TINY_CHAIN, tiny_sweep_sets

BASE, _ = load_settings(None, [*TINY_CHAIN, "stream.validation=0.25"])


@pytest.mark.parametrize("space, named", [
    ({"replay.bogus": {"choice": [1]}}, "sweep.space.replay.bogus"),
    ({"replay.ratio": {"choice": ["1/t", 1.5]}}, "sweep.space.replay.ratio"),
    ({"replay.ratio": {"uniform": [0.0, 0.5]}}, "sweep.space.replay.ratio"),
    ({"generator.latent": {"choice": [16, -4]}}, "sweep.space.generator.latent"),
    ({"generator.hidden": {"randint": [0, 10]}}, "sweep.space.generator.hidden"),
    ({"generator.hidden": {"normal": [1, 2]}}, "sweep.space.generator.hidden"),
    ({"generator.hidden": {"uniform": [10, 5]}}, "sweep.space.generator.hidden.uniform"),
    # a float sampler over an integer key: every trial would fail on its first config
    ({"generator.latent": {"uniform": [4, 8]}}, "sweep.space.generator.latent.uniform: use randint"),
    ({"generator.latent": {"loguniform": [4, 8]}}, "sweep.space.generator.latent.loguniform: use randint"),
    ({"generator.latent": {"randint": [4.5, 8]}}, "sweep.space.generator.latent.randint: expected integers"),
    ({"stream.validation": {"loguniform": [0, 0.5]}}, "sweep.space.stream.validation.loguniform: 0 < low"),
    ({"solver.lr": {"uniform": [0.001, float("inf")]}}, "sweep.space.solver.lr.uniform"),
    ({"solver.lr": {"uniform": [True, 2]}}, "sweep.space.solver.lr.uniform"),
    # a trial without validation data could not be selected on it: the sweep's own rule, per value
    ({"stream.validation": {"grid": [0, 0.25]}}, "sweep.space.stream.validation: never on test accuracy"),
    ({"stream.validation": {"uniform": [0, 0.25]}}, "sweep.space.stream.validation: never on test accuracy"),
])
def test_bad_search_space_fails_with_the_key(space: dict, named: str) -> None:
    """`named`: the message's start, and after ': ' what it must say."""
    key, _, says = named.partition(": ")
    with pytest.raises(ConfigError) as error:
        parse_sweep({"space": space}, BASE)
    message = str(error.value)
    assert message.startswith(f"{key}:") and says in message and "\n" not in message, message


def test_the_modules_example_sweep_section_parses() -> None:
    example = re.search(r"\n\n((?:    .*\n)+)", search_space.__doc__).group(1)
    spec = parse_sweep(yaml.safe_load(textwrap.dedent(example))["sweep"], BASE)
    assert (spec.samples, spec.grace_period, spec.reduction_factor) == (8, 1, 2)
    assert spec.space == search_space.DEFAULT_SPACE


def test_unknown_sweep_setting_and_bad_sample_count_fail() -> None:
    with pytest.raises(ConfigError, match=r"sweep\.colour"):
        parse_sweep({"colour": "red"}, BASE)
    with pytest.raises(ConfigError, match=r"sweep\.samples"):
        parse_sweep({"samples": 0}, BASE)


def test_more_samples_of_grids_alone_are_refused_since_they_repeat_the_same_runs() -> None:
    grids = {"generator.latent": {"grid": [16, 100]}, "replay.ratio": {"grid": ["1/t", 0.5]}}
    assert parse_sweep({"space": grids}, BASE).samples == 1  # the default for grids only
    with pytest.raises(ConfigError) as error:
        parse_sweep({"samples": 2, "space": grids}, BASE)
    assert str(error.value).startswith("sweep.samples: 2 samples of a space of grids only run each combination 2 "
                                       "times with the same run.seed") and "sweep run.seed" in str(error.value)
    # a sampler drawn anew per sample makes each sample's trials other configs
    mixed = {**grids, "replay.ratio": {"choice": ["1/t", 0.5]}}
    assert parse_sweep({"samples": 2, "space": mixed}, BASE).samples == 2


def test_a_sweep_needs_validation_data_to_select_on() -> None:
    no_validation, _ = load_settings(None, TINY_CHAIN)
    with pytest.raises(ConfigError, match=r"^stream\.validation: .*never on test accuracy"):
        parse_sweep(None, no_validation)


def test_swept_validation_data_replaces_the_base_configs() -> None:
    no_validation, _ = load_settings(None, TINY_CHAIN)
    spec = parse_sweep({"space": {"stream.validation": {"uniform": [0.1, 0.3]}}}, no_validation)
    assert [c["stream.validation"] for c in spec.combinations()] == [0.1, 0.3]


def test_integer_keys_take_randint_and_float_keys_any_range() -> None:
    spec = parse_sweep({"space": {"generator.latent": {"randint": [4, 8]}, "solver.lr": {"loguniform": [1e-4, 1e-2]},
                                  "replay.ratio": {"uniform": [0.2, 1]}}}, BASE)
    # randint excludes its upper bound, as Tune's does; a range is checked by its ends, in every combination
    assert [tuple(c.values()) for c in spec.combinations()] == [
        (4, 1e-4, 0.2), (4, 1e-4, 1.0), (4, 1e-2, 0.2), (4, 1e-2, 1.0),
        (7, 1e-4, 0.2), (7, 1e-4, 1.0), (7, 1e-2, 0.2), (7, 1e-2, 1.0)]


IMAGES = ["stream.name=permuted", "stream.sources=mnist", "stream.image_size=16"]  # a stream whose size can be swept
CNN_ON_28 = ("sweep.space: solver.kind=cnn with stream.image_size=28: solver.kind: expected mlp for 28x28 streams "
             "(cnn needs 32x32x3 input, or stream.image_size a multiple of 8), got 'cnn'")


@pytest.mark.parametrize("space, error", [
    # each value is valid with the base config (16x16 images, an mlp solver); cnn and 28 are not, together
    ({"solver.kind": {"grid": ["mlp", "cnn"]}, "stream.image_size": {"grid": [16, 28]}}, CNN_ON_28),
    # every choice with every grid value and range end (randint [16, 29] ends at 28)
    ({"solver.kind": {"choice": ["mlp", "cnn"]}, "stream.image_size": {"randint": [16, 29]}}, CNN_ON_28),
    # only the keys the error depends on are named: here the ratio alone, whatever the capacity
    ({"generator.latent": {"grid": [16, 100]}, "replay.ratio": {"choice": ["1/t", 2.0]}},
     "sweep.space.replay.ratio: expected '1/t' or a number in (0, 1], got 2.0"),
    # no other value to tell which key the error depends on: every swept key is named
    ({"solver.kind": {"grid": ["cnn"]}, "stream.image_size": {"grid": [28]}}, CNN_ON_28),
])
def test_swept_values_no_trial_config_takes_together_fail_naming_them(space: dict, error: str) -> None:
    base, _ = load_settings(None, [*TINY_CHAIN, "stream.validation=0.25", *IMAGES])
    with pytest.raises(ConfigError) as raised:
        parse_sweep({"space": space}, base)
    assert str(raised.value) == error


def test_a_value_only_other_swept_values_make_valid_is_accepted() -> None:
    """cnn needs a size that is a multiple of 8, which the base (the sources' 28) is not but every swept one is."""
    base, _ = load_settings(None, [*TINY_CHAIN, "stream.validation=0.25", *IMAGES[:2]])  # 28x28, the sources'
    space = {"solver.kind": {"grid": ["mlp", "cnn"]}, "stream.image_size": {"grid": [16, 32]}}
    assert parse_sweep({"space": space}, base).space == space


def test_past_the_combination_limit_each_value_is_checked_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_space, "MAX_COMBINATIONS", 3)
    space = {"generator.latent": {"grid": [16, 100]}, "replay.ratio": {"choice": ["1/t", 0.5]}}
    assert parse_sweep({"space": space}, BASE).combinations() == [
        {"generator.latent": 16}, {"generator.latent": 100}, {"replay.ratio": "1/t"}, {"replay.ratio": 0.5}]
    with pytest.raises(ConfigError, match=r"^sweep\.space\.replay\.ratio: .* got 2\.0$"):
        parse_sweep({"space": {**space, "replay.ratio": {"choice": ["1/t", 2.0]}}}, BASE)


def test_keys_left_at_their_default_can_be_searched() -> None:
    conv, _ = load_settings(None, [*TINY_CHAIN, "stream.validation=0.25", "generator.kind=conv-vae"])
    spec = parse_sweep({"space": {"generator.channels": {"choice": [16, 32]}}}, conv)
    assert spec.space == {"generator.channels": {"choice": [16, 32]}}


@pytest.mark.parametrize("space, sets, error", [
    ({"generator.latent": {"grid": [16, 100]}}, ["replay.arm=er"],
     "sweep.space.generator.latent: no trial reads it (replay.arm=er trains no generator)"),
    ({"replay.ratio": {"grid": [0.5, 0.8]}}, ["replay.arm=joint"],
     "sweep.space.replay.ratio: no trial reads it (replay.arm=joint replays nothing)"),
    ({"generator.channels": {"grid": [16, 32]}}, [],
     "sweep.space.generator.channels: no trial reads it (generator.kind=vae is fully connected)"),
    ({"generator.critic_steps": {"randint": [1, 6]}}, [],
     "sweep.space.generator.critic_steps: no trial reads it (generator.kind=vae is no WGAN-GP)"),
    ({"replay.temperature": {"uniform": [1.0, 4.0]}}, [],
     "sweep.space.replay.temperature: no trial reads it (replay.targets=hard distils nothing)"),
])
def test_a_swept_key_no_trial_reads_is_refused(space: dict, sets: list[str], error: str) -> None:
    """The default space (ratio x generator capacity) with replay.arm=er would run 4 equal trials per ratio."""
    base, _ = load_settings(None, [*TINY_CHAIN, "stream.validation=0.25", *sets])
    with pytest.raises(ConfigError) as raised:
        parse_sweep({"space": space}, base)
    assert str(raised.value) == f"{error}, so each of its values would run the same trials"


@pytest.mark.parametrize("space", [
    # the gr trials read the generator's keys, whatever the er trials do
    {"replay.arm": {"grid": ["gr", "er"]}, "generator.latent": {"grid": [16, 100]}},
    {"replay.targets": {"grid": ["hard", "soft"]}, "replay.temperature": {"grid": [2.0, 4.0]}},
    {"generator.kind": {"choice": ["vae", "wgan-gp"]}, "generator.critic_steps": {"grid": [1, 5]}},
])
def test_a_swept_key_some_trials_read_is_accepted(space: dict) -> None:
    assert parse_sweep({"space": space}, BASE).space == space


def test_the_summary_names_the_grace_period_in_tasks() -> None:
    assert "| validation after 1 task |" in sweep_module.summarize([], ["replay.ratio"], 1)
    assert "| validation after 2 tasks |" in sweep_module.summarize([], ["replay.ratio"], 2)


def test_default_space_searches_ratio_and_capacity() -> None:
    spec = parse_sweep(None, BASE)
    assert {"replay.ratio", "generator.latent", "generator.hidden"} <= set(spec.space)
    assert "1/t" in spec.space["replay.ratio"]["choice"]


def test_cli_reports_a_bad_space_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text("sweep:\n  space:\n    replay.ratio: {choice: [0.5, 2.0]}\n")
    assert main(["--config", str(config), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: sweep.space.replay.ratio")


@pytest.mark.parametrize("name, rule", [("my sweep", "pipeline.name: expected up to 100 letters, digits"),
                                         ("a#b", "pipeline.name: expected up to 100 letters, digits"),
                                         ("x" * 90, "pipeline.name: expected up to 100 letters, digits")])
def test_a_sweep_name_its_trials_could_not_take_fails_before_anything_starts(
        name: str, rule: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--workdir", str(tmp_path), "--name", name, *tiny_sweep_sets()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --name {name!r}: trials are named {name}-<trial id>, and {rule}"), err
    assert list(tmp_path.iterdir()) == []  # no store, no Ray state


class _Ray:
    """Stands in for the cluster and Tune: run_sweep's checks and its sweep run, without starting Ray."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
        self.statuses: list[str] = []  # the sweep run's status while Tune ran, per sweep
        self.workdir = workdir
        monkeypatch.setattr(sweep_module, "join_ray", lambda: False)  # a cluster's Ray, joined
        monkeypatch.setattr(sweep_module, "alive_nodes", lambda: [{"CPU": 2.0}])
        monkeypatch.setattr(sweep_module, "_tuner", lambda *args: self)

    def fit(self) -> list:  # no trial reported a task
        self.statuses += [run.info.status for run in self.sweep_runs()]
        return []

    def sweep_runs(self) -> list:
        client = _client(self.workdir)
        experiment = client.get_experiment_by_name("dgr")
        return [] if experiment is None else client.search_runs([experiment.experiment_id], "tags.`dgr.sweep` = 's'")


@pytest.mark.mlflow
def test_a_swept_batch_size_the_workers_cannot_split_fails_before_the_sweep_run(
        fake_data_root: Path, store_workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    ray = _Ray(monkeypatch, store_workdir)
    config = store_workdir / "sweep.yaml"
    config.write_text("sweep:\n  space:\n    solver.batch_size: {grid: [32, 33]}\n")
    assert main(["--config", str(config), "--data-root", str(fake_data_root), "--workdir", str(store_workdir),
                 "--name", "s", *tiny_sweep_sets("pipeline.num_workers=2")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: sweep.space.solver.batch_size: 33 does not divide among pipeline.num_workers = 2 workers; use a "
        "multiple of 2")
    assert ray.sweep_runs() == []


@pytest.mark.mlflow
@pytest.mark.parametrize("space, sets, error", [
    # the trial's chain builds its scholar before its workers start; here it is built before Ray starts
    ("generator.kind: {grid: [vae, conv-vae]}\n    stream.image_size: {grid: [16, 30]}", IMAGES,
     "sweep.space: generator.kind=conv-vae with stream.image_size=30: generator.kind: conv-vae needs (C, H, W) "
     "inputs with H and W divisible by 4, got input shape (1, 30, 30)"),
    # each swept stream's data is read: MNIST's 28x28 images cannot be padded to 16x16
    ("stream.image_size: {grid: [32, 16]}", [*IMAGES, "stream.fit=pad"],
     "sweep.space: stream.image_size=16: mnist train: 28x28 images cannot be padded to 16x16; set stream.fit: resize"),
    # ASHA compares trials task by task, and a trial is finished after as many tasks as the first
    ("stream.num_tasks: {grid: [3, 2]}", [],
     "sweep.space: stream.num_tasks=2: 2 tasks where the first trial has 3; a sweep compares trials task by task, "
     "so every trial needs as many"),
])
def test_swept_values_a_trial_chain_would_refuse_fail_before_the_sweep_run(
        space: str, sets: list[str], error: str, fake_data_root: Path, store_workdir: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    ray = _Ray(monkeypatch, store_workdir)
    config = store_workdir / "sweep.yaml"
    config.write_text(f"sweep:\n  space:\n    {space}\n")
    assert main(["--config", str(config), "--data-root", str(fake_data_root), "--workdir", str(store_workdir),
                 "--name", "s", *tiny_sweep_sets(*sets)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {error}"
    assert ray.sweep_runs() == [] and not (store_workdir / "ray_results").exists()


@pytest.mark.mlflow
def test_a_failed_sweep_ends_its_run_failed_and_a_rerun_sets_it_running_again(
        fake_data_root: Path, store_workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    ray = _Ray(monkeypatch, store_workdir)
    args = ["--data-root", str(fake_data_root), "--workdir", str(store_workdir), "--name", "s", *tiny_sweep_sets()]
    for _ in range(2):
        assert main(args) == 1
        assert capsys.readouterr().err.strip().splitlines()[-1] == "error: sweep s: no trial finished all 3 tasks"
        assert [run.info.status for run in ray.sweep_runs()] == ["FAILED"]
    assert ray.statuses == ["RUNNING", "RUNNING"]


@pytest.mark.mlflow
def test_a_sweep_name_given_again_with_another_space_fails_before_tune_restores_the_old_sweep(
        fake_data_root: Path, store_workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """Tune restores a sweep by name with the space it was started with: the rerun printed the old trials
    as the new sweep's, and exited 0."""
    ray = _Ray(monkeypatch, store_workdir)
    config = store_workdir / "sweep.yaml"
    args = ["--config", str(config), "--data-root", str(fake_data_root), "--workdir", str(store_workdir),
            "--name", "s", *tiny_sweep_sets()]
    config.write_text("sweep:\n  space:\n    replay.ratio: {grid: [0.5]}\n")
    assert main(args) == 1  # the stand-in's Tune finishes no trial
    capsys.readouterr()
    config.write_text("sweep:\n  space:\n    replay.ratio: {grid: [0.8, 0.9]}\n")
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'error: --name s: sweep s was started with another sweep.space: {"replay.ratio": {"grid": [0.5]}}, not '
        '{"replay.ratio": {"grid": [0.8, 0.9]}}; rerun it as it was started to resume it, or give this one '
        "another --name")
    assert ray.statuses == ["RUNNING"] and [run.info.status for run in ray.sweep_runs()] == ["FAILED"]


@pytest.mark.mlflow
def test_a_sweep_without_a_name_is_named_by_its_config_and_search_settings(
        fake_data_root: Path, store_workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    _Ray(monkeypatch, store_workdir)
    config = store_workdir / "sweep.yaml"
    args = ["--config", str(config), "--data-root", str(fake_data_root), "--workdir", str(store_workdir),
            *tiny_sweep_sets()]
    names = []
    for space, sets in (("{grid: [0.5]}", []), ("{grid: [0.5]}", []), ("{grid: [0.8]}", []),
                        ("{grid: [0.5]}", ["--set", "solver.lr=0.01"])):
        config.write_text(f"sweep:\n  space:\n    replay.ratio: {space}\n")
        assert main([*args, *sets]) == 1
        names.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert names[0] == names[1] and len(set(names)) == 3, names  # the same command resumes; a change starts anew
    assert all(re.fullmatch(r"error: sweep sweep-[0-9a-f]{12}: no trial finished all 3 tasks", n) for n in names)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_reach_tune_as_its_stop_signal(signum: int) -> None:
    """While Tune's `fit` runs (it takes SIGUSR1), both become its stop signal (state saved, trials stopped);
    before `fit` has taken SIGUSR1, whose default would end the process, an interrupt. Handlers are put back."""
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    tune_stops = []
    with sweep_module._interruptible() as interrupted:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signum)
        assert interrupted.is_set()
        signal.signal(signal.SIGUSR1, lambda *args: tune_stops.append(args[0]))  # as Tune's fit does
        signal.raise_signal(signum)
        assert tune_stops == [signal.SIGUSR1]
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


@pytest.mark.mlflow
@pytest.mark.parametrize("when", ["while Tune runs", "before Tune takes SIGUSR1", "outside Tune's fit",
                                  "before the sweep run"])
def test_sigterm_ends_the_sweep_as_ctrl_c_does(
        when: str, fake_data_root: Path, store_workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """`ray job stop`, `kill`, `docker stop` send SIGTERM: the sweep's run ends KILLED, and so do the runs a
    trial left open, the exit status is 130 and one line says how to resume, wherever the signal finds the
    driver (Tune's own path is covered by the interrupted sweep below)."""
    ray, before = _Ray(monkeypatch, store_workdir), {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def terminated(result: object) -> object:
        signal.raise_signal(signal.SIGTERM)
        return result

    tune_stops = []

    def fit() -> list:  # Tune's fit: takes SIGUSR1 and, once it fires, ends without waiting for a trial's chain
        signal.signal(signal.SIGUSR1, lambda *args: tune_stops.append(args[0]))
        sweep_run = ray.sweep_runs()[0].info
        chain_run = tracking.start_chain_run("s-00000_00000", sweep_run.experiment_id, BASE, "hash", sweep_run.run_id)
        tracking.start_task_run(chain_run, sweep_run.experiment_id, "s-00000_00000", BASE, "hash",
                                TaskInfo(0, "task 0", (0, 1)))  # the trial was training its first task
        return terminated([])

    if when == "while Tune runs":
        monkeypatch.setattr(ray, "fit", fit)
    elif when == "before Tune takes SIGUSR1":
        monkeypatch.setattr(sweep_module, "_tuner", lambda *args: terminated(ray))
    elif when == "outside Tune's fit":
        monkeypatch.setattr(sweep_module, "trial_slots", lambda *args: terminated(1))
    else:
        monkeypatch.setattr(sweep_module, "alive_nodes", lambda: terminated([{"CPU": 2.0}]))
    assert main(["--data-root", str(fake_data_root), "--workdir", str(store_workdir), "--name", "s",
                 *tiny_sweep_sets()]) == 130
    error = capsys.readouterr().err.strip().splitlines()[-1]
    if when == "before the sweep run":
        assert error == "error: interrupted before the sweep started; rerun the same command to start it"
        assert ray.sweep_runs() == []
    else:
        assert error == "error: sweep s interrupted; rerun with --name s to resume it"
        assert [run.info.status for run in ray.sweep_runs()] == ["KILLED"]
    client = _client(store_workdir)
    runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id])
    assert {run.info.run_name: run.info.status for run in runs} == {
        **({} if when == "before the sweep run" else {"s": "KILLED"}),
        **({"s-00000_00000-hash": "KILLED", "s-00000_00000-task-0": "KILLED"} if when == "while Tune runs" else {})}
    assert tune_stops == ([signal.SIGUSR1] if when == "while Tune runs" else [])
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def _sweep(data_root: Path, workdir: Path, workers: int) -> list[str]:
    """`python pipelines/sweep.py ...` (run it in `workdir`) on the tiny stream: 4 trials, one at a time,
    two good and two hopeless learning rates in that order so ASHA compares them in order."""
    config = workdir / "sweep.yaml"
    config.write_text("sweep:\n  samples: 1\n  max_concurrent: 1\n  grace_period: 1\n  reduction_factor: 2\n"
                      "  space:\n    solver.lr: {grid: [0.01, 1.0e-7, 0.003, 1.0e-7]}\n")
    # Paths relative to the sweep's working directory, as a user types them: trials run elsewhere.
    args = [sys.executable, "-m", "pipelines.sweep", "--config", "sweep.yaml", "--data-root",
            os.path.relpath(data_root, workdir), "--workdir", ".", "--name", "tiny-sweep", "--json", "sweep.json"]
    return args + tiny_sweep_sets("stream.num_tasks=2", f"pipeline.num_workers={workers}", "replay.arm=none")


def _env() -> dict[str, str]:
    """Its own local Ray, the embedded MLflow store of its workdir, and this checkout's code (an editable
    install of another checkout, a git worktree's main one, would be found first from the workdir)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(CHECKOUT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def _check_sweep(workdir: Path, stdout: str) -> list[dict]:
    """The summary, the `best` alias, one nested chain run per trial, each ended as its trial ended."""
    summary = json.loads((workdir / "sweep.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 4
    stopped = [t for t in trials if not t["finished"]]
    assert stopped and all(t["tasks"] == 1 for t in stopped)  # ASHA stopped them after their first task
    best = summary["best"]
    # chosen on validation accuracy, never on test accuracy
    assert best["finished"] and best["validation_accuracy"] == max(t["validation_accuracy"] for t in trials
                                                                   if t["finished"])
    assert f"best: trial {best['trial']}" in stdout
    assert all(t["graced_accuracy"] is not None for t in trials)  # every trial learned the grace period
    client = _client(workdir)
    aliased = client.get_model_version_by_alias(best["registered_model"], "best")
    assert str(aliased.version) == str(client.get_model_version_by_alias(best["registered_model"], "task-1").version)
    sweep_runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                                    filter_string="tags.`dgr.sweep` = 'tiny-sweep'")
    assert len(sweep_runs) == 1
    nested = client.search_runs([sweep_runs[0].info.experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{sweep_runs[0].info.run_id}'")
    status = {run.data.tags["dgr.chain"]: run.info.status for run in nested}
    assert status == {t["registered_model"]: "FINISHED" if t["finished"] else "KILLED" for t in trials}
    # One registered model per sweep, the best chain's: one version per task, nothing registered twice.
    assert [m.name for m in client.search_registered_models()] == [best["registered_model"]]
    assert len(client.search_model_versions(f"name = '{best['registered_model']}'")) == best["tasks"]
    assert set(client.get_registered_model(best["registered_model"]).aliases) == {"task-0", "task-1", "best"}
    # Tune saved no checkpoint (the registry is the chain's): a trial on another node would fail to save one
    assert not list((workdir / "ray_results").rglob("checkpoint_*"))
    for t in trials:  # every trial's task runs stay
        runs = client.search_runs([sweep_runs[0].info.experiment_id],
                                  filter_string=f"tags.`dgr.chain` = '{t['registered_model']}'")
        # A task the interrupt stopped mid-way keeps its KILLED run; a resumed sweep finished no task twice.
        task_runs = [run for run in runs if "dgr.task" in run.data.tags and run.info.status == "FINISHED"]
        assert len(task_runs) == t["tasks"]
    return trials


@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.slow
def test_an_interrupted_sweep_resumes_stops_hopeless_trials_and_aliases_the_best(
        fake_data_root: Path, workdir: Path) -> None:
    """One sweep, stopped by SIGTERM (`ray job stop`, `kill`; Ctrl-C takes the same path, see
    `test_ctrl_c_and_sigterm_reach_tune_as_its_stop_signal`) once its first trial has finished, then resumed
    to the end. Two workers of 0.99 CPU per trial on a 2-CPU Ray: a trial that kept its workers' placement
    group after ASHA stopped it would leave the next trial waiting forever (the resumed sweep would run
    into its timeout)."""
    args = _sweep(fake_data_root, workdir, workers=2)
    err_file = workdir / "interrupted.err"
    with err_file.open("w") as err_stream:
        sweep = subprocess.Popen(args, cwd=workdir, env=_env(), stdout=subprocess.PIPE, stderr=err_stream, text=True)
    first_chain_done = threading.Event()

    def read_stdout() -> None:  # the trials' lines reach the sweep's stdout through Ray
        for line in sweep.stdout:
            if re.search(r"registered tiny-sweep-\S+ version \d+ \(alias task-1\)", line):
                first_chain_done.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    first_chain_done.wait(timeout=600)
    sweep.send_signal(signal.SIGTERM)  # once the first trial finished its chain
    sweep.wait(timeout=300)
    reader.join(timeout=10)
    err = err_file.read_text()
    assert sweep.returncode == 130, err[-3000:]
    # Ray's own log lines may follow it on stderr.
    assert "error: sweep tiny-sweep interrupted; rerun with --name tiny-sweep to resume it" in err.splitlines()
    first = [m.name for m in _client(workdir).search_registered_models("name LIKE 'tiny-sweep-%'")
             if "task-1" in m.aliases]
    runs = _client(workdir).search_runs([_client(workdir).get_experiment_by_name("dgr").experiment_id])
    assert {run.data.tags["mlflow.runName"]: run.info.status for run in runs if run.data.tags.get("dgr.sweep")} \
        == {"tiny-sweep": "KILLED"}
    assert not [run.data.tags["mlflow.runName"] for run in runs if run.info.status == "RUNNING"]

    done = subprocess.run(args, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restoring sweep tiny-sweep" in done.stdout
    trials = _check_sweep(workdir, done.stdout)
    # The trial that had finished was not run again: its chain still has one version per task.
    assert first and {t["registered_model"] for t in trials} >= set(first)
