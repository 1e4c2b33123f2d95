"""Default chain names: one registered model per stream, scenario and arm, never shared by two streams
over different data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dgr.config import Config, ConfigError, StreamConfig, config_keys, from_flat
from pipelines import tracking
from pipelines.settings import (CHAIN_NAME, DEFAULT_CONFIG, MAX_NAME, MAX_TITLE, PipelineConfig, load_settings,
                                read_yaml)
from tests.conftest import REPO


def _name(**stream: object) -> str:
    return PipelineConfig().chain_name(dataclasses.replace(Config(), stream=StreamConfig(**stream)))


def test_built_in_streams_keep_their_names() -> None:
    assert _name() == "dgr-split_mnist-class-gr"
    assert _name(name="permuted_mnist", scenario="domain") == "dgr-permuted_mnist-domain-gr"


def test_new_domain_streams_over_different_sources_get_different_chains() -> None:
    first = _name(name="domains", scenario="domain", sources=("folder:hospitals/north", "parquet:/data/south"))
    other = _name(name="domains", scenario="domain", sources=("mnist", "fashion_mnist"))
    assert first == "dgr-domains-north.south-domain-gr"
    assert other == "dgr-domains-mnist.fashion_mnist-domain-gr"


def test_long_or_odd_source_names_give_a_short_valid_name() -> None:
    sources = (f"folder:/data/site {'x' * 80}", "npz:/data/site #2")
    name = _name(name="domains", scenario="domain", sources=sources)
    assert CHAIN_NAME.fullmatch(name) and len(name) <= len("dgr--domain-gr") + MAX_TITLE
    assert name != _name(name="domains", scenario="domain", sources=(sources[0], "npz:/data/site #3"))


def test_a_given_name_wins() -> None:
    assert PipelineConfig(name="north-clinic").chain_name(Config()) == "north-clinic"


def test_switches_written_as_yaml_booleans_read_as_their_words(tmp_path: Path) -> None:
    path = tmp_path / "chain.yaml"
    path.write_text("pipeline:\n  use_gpu: false\n  run_ahead: true\n")
    _, pipeline = load_settings(path)
    assert (pipeline.use_gpu, pipeline.run_ahead) == ("false", "true")
    _, pipeline = load_settings(path, ["pipeline.run_ahead=false"])
    assert pipeline.run_ahead == "false"


def test_a_switch_that_is_not_one_of_its_words_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^pipeline\.run_ahead: expected one of auto, true, false, got 'maybe'$"):
        PipelineConfig(run_ahead="maybe")
    with pytest.raises(ConfigError, match=r"^pipeline\.use_gpu: expected one of auto, true, false, got 'yes'$"):
        PipelineConfig(use_gpu="yes")


@pytest.mark.parametrize("name", ["a'b", "-x", "café", "a#b", "a b", "a/b", "m@task-1", "x" * (MAX_NAME + 1)])
def test_a_name_the_registry_would_refuse_fails_as_pipeline_name(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^pipeline\.name: expected up to 100 letters, digits"):
        PipelineConfig(name=name)
    with pytest.raises(tracking.RegistryError):  # the registry's check: the same rule
        tracking.checked_name(name)


@pytest.mark.parametrize("name", ["north-clinic", "v1.2_run", "9", "x" * MAX_NAME])
def test_a_name_the_registry_takes_is_a_valid_pipeline_name(name: str) -> None:
    assert PipelineConfig(name=name).name == tracking.checked_name(name) == name


def test_exponents_without_a_dot_in_yaml_are_numbers(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML's default) reads 1e-3 as the string '1e-3'; `--set solver.lr=1e-3` gives a number.
    path = tmp_path / "chain.yaml"
    path.write_text("solver:\n  lr: 1e-3\ngenerator:\n  lr: 2E-4\n  gradient_penalty: 1.5e1\n"
                    "pipeline:\n  gpus_per_worker: 5e-1\n")
    config, pipeline = load_settings(path)
    assert (config.solver.lr, config.generator.lr, config.generator.gradient_penalty) == (1e-3, 2e-4, 15.0)
    assert pipeline.gpus_per_worker == 0.5
    assert config.solver.lr == load_settings(None, ["solver.lr=1e-3"])[0].solver.lr


def test_text_that_is_not_a_number_stays_an_error(tmp_path: Path) -> None:
    path = tmp_path / "chain.yaml"
    path.write_text("solver:\n  lr: 1e-3x\n")
    with pytest.raises(ConfigError, match=r"^solver\.lr: expected a finite number > 0, got '1e-3x'$"):
        load_settings(path)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_worker_cpus_must_be_finite(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^pipeline\.worker_cpus: expected a finite number >= 0, got {value}$"):
        load_settings(None, [f"pipeline.worker_cpus={value}"])


def test_the_example_configs_register_distinct_chains() -> None:
    # two example chains under one name would refuse each other in one workdir (another config hash)
    names = {path.name: pipeline.chain_name(config) for path in sorted((REPO / "configs").glob("*.yaml"))
             if not path.name.startswith("sweep")  # a sweep's trials are named after the sweep
             for config, pipeline in [load_settings(path, [])]}
    assert len(set(names.values())) == len(names), names


def test_the_default_config_lists_every_key_at_its_default() -> None:
    listed = {f"{section}.{key}" for section, inner in read_yaml(DEFAULT_CONFIG).items() for key in inner}
    assert listed == set(config_keys()) | {f"pipeline.{f.name}" for f in dataclasses.fields(PipelineConfig)}
    config, pipeline = load_settings(DEFAULT_CONFIG, [])
    assert config == from_flat({"run.device": "auto"}) and pipeline == PipelineConfig()
