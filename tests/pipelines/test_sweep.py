"""The Tune sweep: bad search spaces fail at once; a 4-trial sweep on 2 CPUs stops one early and marks the best."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from mlflow.tracking import MlflowClient

from dgr.config import ConfigError
from pipelines.search_space import parse_sweep
from pipelines.settings import load_settings
from pipelines.sweep import main
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


@pytest.fixture
def ray_shutdown() -> Iterator[None]:
    yield
    import ray

    ray.shutdown()  # the sweep started a local Ray in this process


@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.slow
def test_sweep_stops_a_hopeless_trial_and_aliases_the_best(fake_data_root: Path, workdir: Path,
                                                            ray_shutdown: None) -> None:
    config = workdir / "sweep.yaml"
    # Two good and two hopeless learning rates, one trial at a time so ASHA compares them in order.
    config.write_text("sweep:\n  samples: 1\n  max_concurrent: 1\n  grace_period: 1\n  reduction_factor: 2\n"
                      "  space:\n    solver.lr: {grid: [0.01, 1.0e-7, 0.003, 1.0e-7]}\n")
    args = ["--config", str(config), "--data-root", str(fake_data_root), "--workdir", str(workdir),
            "--name", "tiny-sweep", "--json", str(workdir / "sweep.json")]
    for item in [*TINY_CHAIN, "stream.num_tasks=2", "pipeline.num_workers=1", "replay.arm=none"]:
        if not item.startswith("pipeline.name"):
            args += ["--set", item]
    assert main(args) == 0
    summary = json.loads((workdir / "sweep.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 4
    assert any(not t["finished"] for t in trials)  # ASHA stopped at least one after its first task
    best = summary["best"]
    assert best["finished"] and best["average_accuracy"] == max(t["average_accuracy"] for t in trials
                                                                if t["finished"])
    client = MlflowClient()
    aliased = client.get_model_version_by_alias(best["registered_model"], "best")
    assert str(aliased.version) == str(client.get_model_version_by_alias(best["registered_model"], "task-1").version)
    sweep_runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id],
                                    filter_string="tags.`dgr.sweep` = 'tiny-sweep'")
    assert len(sweep_runs) == 1
    nested = client.search_runs([sweep_runs[0].info.experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{sweep_runs[0].info.run_id}'")
    assert len(nested) == 4  # one chain run per trial
