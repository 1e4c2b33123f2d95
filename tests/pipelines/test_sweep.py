"""The Tune sweep's search space: bad spaces fail at once with the key, before any trial starts."""

from __future__ import annotations

from pathlib import Path

import pytest

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
