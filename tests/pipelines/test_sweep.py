"""The Tune sweep: bad search spaces fail at once; a 4-trial sweep on 2 CPUs stops hopeless trials early,
gives their resources back, and marks the best trial's final scholar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dgr.config import ConfigError
from pipelines.search_space import parse_sweep
from pipelines.settings import load_settings
from pipelines.sweep import main
from tests.conftest import REPO
from tests.pipelines.conftest import TINY_CHAIN

BASE, _ = load_settings(None, TINY_CHAIN)


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


@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.slow
def test_sweep_stops_hopeless_trials_and_aliases_the_best(fake_data_root: Path, workdir: Path) -> None:
    config = workdir / "sweep.yaml"
    # Two good and two hopeless learning rates, one trial at a time so ASHA compares them in order.
    config.write_text("sweep:\n  samples: 1\n  max_concurrent: 1\n  grace_period: 1\n  reduction_factor: 2\n"
                      "  space:\n    solver.lr: {grid: [0.01, 1.0e-7, 0.003, 1.0e-7]}\n")
    args = ["--config", str(config), "--data-root", str(fake_data_root), "--workdir", str(workdir),
            "--name", "tiny-sweep", "--json", str(workdir / "sweep.json")]
    # Two workers of 0.99 CPU per trial on a 2-CPU Ray: a trial that kept its workers' placement group
    # after ASHA stopped it would leave the next trial waiting forever (the sweep then runs into the
    # timeout below instead of finishing).
    for item in [*TINY_CHAIN, "stream.num_tasks=2", "pipeline.num_workers=2", "replay.arm=none"]:
        if not item.startswith("pipeline.name"):
            args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    done = subprocess.run([sys.executable, str(REPO / "pipelines" / "sweep.py"), *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((workdir / "sweep.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 4
    stopped = [t for t in trials if not t["finished"]]
    assert stopped and all(t["tasks"] == 1 for t in stopped)  # ASHA stopped them after their first task
    best = summary["best"]
    assert best["finished"] and best["average_accuracy"] == max(t["average_accuracy"] for t in trials
                                                                if t["finished"])
    assert f"best: trial {best['trial']}" in done.stdout
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    aliased = client.get_model_version_by_alias(best["registered_model"], "best")
    assert str(aliased.version) == str(client.get_model_version_by_alias(best["registered_model"], "task-1").version)
    sweep_runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                                    filter_string="tags.`dgr.sweep` = 'tiny-sweep'")
    assert len(sweep_runs) == 1
    nested = client.search_runs([sweep_runs[0].info.experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{sweep_runs[0].info.run_id}'")
    status = {run.data.tags["dgr.chain"]: run.info.status for run in nested}
    assert status == {t["registered_model"]: "FINISHED" if t["finished"] else "KILLED" for t in trials}
    for t in stopped:  # a stopped trial registered its first task only
        assert client.get_model_version_by_alias(t["registered_model"], "task-0")
        assert client.get_registered_model(t["registered_model"]).aliases.keys() == {"task-0"}
