"""The Tune sweep: bad search spaces fail at once; a 4-trial sweep on 2 CPUs stops hopeless trials early,
gives their resources back, and marks the best trial's final scholar."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dgr.config import ConfigError
from pipelines.search_space import parse_sweep
from pipelines.settings import load_settings
from pipelines.sweep import main
from tests.pipelines.conftest import TINY_CHAIN, tiny_sweep_sets

BASE, _ = load_settings(None, [*TINY_CHAIN, "stream.validation=0.25"])


@pytest.mark.parametrize("space, named", [
    ({"replay.bogus": {"choice": [1]}}, "sweep.space.replay.bogus"),
    ({"replay.ratio": {"choice": ["1/t", 1.5]}}, "replay.ratio"),
    ({"replay.ratio": {"uniform": [0.0, 0.5]}}, "replay.ratio"),
    ({"generator.latent": {"choice": [16, -4]}}, "generator.latent"),
    ({"generator.hidden": {"randint": [0, 10]}}, "generator.hidden"),
    ({"generator.hidden": {"normal": [1, 2]}}, "sweep.space.generator.hidden"),
    ({"generator.hidden": {"uniform": [10, 5]}}, "sweep.space.generator.hidden.uniform"),
])
def test_bad_search_space_fails_with_the_key(space: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as error:
        parse_sweep({"space": space}, BASE)
    assert "\n" not in str(error.value)


def test_unknown_sweep_setting_and_bad_sample_count_fail() -> None:
    with pytest.raises(ConfigError, match=r"sweep\.colour"):
        parse_sweep({"colour": "red"}, BASE)
    with pytest.raises(ConfigError, match=r"sweep\.samples"):
        parse_sweep({"samples": 0}, BASE)


def test_a_sweep_needs_validation_data_to_select_on() -> None:
    no_validation, _ = load_settings(None, TINY_CHAIN)
    with pytest.raises(ConfigError, match=r"^stream\.validation: .*never on test accuracy"):
        parse_sweep(None, no_validation)


def test_keys_left_at_their_default_can_be_searched() -> None:
    spec = parse_sweep({"space": {"generator.channels": {"choice": [16, 32]}}}, BASE)
    assert spec.space == {"generator.channels": {"choice": [16, 32]}}


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
    """Its own local Ray and the embedded MLflow store of its workdir."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}


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
    """One sweep, interrupted once its first trial has finished, then resumed to the end. Two workers of
    0.99 CPU per trial on a 2-CPU Ray: a trial that kept its workers' placement group after ASHA stopped
    it would leave the next trial waiting forever (the resumed sweep would run into its timeout)."""
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
    sweep.send_signal(signal.SIGINT)  # Ctrl-C once the first trial finished its chain
    sweep.wait(timeout=300)
    reader.join(timeout=10)
    err = err_file.read_text()
    assert sweep.returncode == 130, err[-3000:]
    # Ray's own log lines may follow it on stderr.
    assert "error: sweep tiny-sweep interrupted; rerun with --name tiny-sweep to resume it" in err.splitlines()
    first = [m.name for m in _client(workdir).search_registered_models("name LIKE 'tiny-sweep-%'")
             if "task-1" in m.aliases]

    done = subprocess.run(args, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restoring sweep tiny-sweep" in done.stdout
    trials = _check_sweep(workdir, done.stdout)
    # The trial that had finished was not run again: its chain still has one version per task.
    assert first and {t["registered_model"] for t in trials} >= set(first)
