"""Default chain names: one registered model per stream, scenario and arm, never shared by two streams
over different data."""

from __future__ import annotations

import dataclasses
import re

from dgr.config import Config, StreamConfig
from pipelines.settings import MAX_TITLE, PipelineConfig

CHAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # what the registry accepts


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


def test_switches_written_as_yaml_booleans_read_as_their_words(tmp_path) -> None:
    from pipelines.settings import load_settings

    path = tmp_path / "chain.yaml"
    path.write_text("pipeline:\n  use_gpu: false\n  run_ahead: true\n")
    _, pipeline = load_settings(path)
    assert (pipeline.use_gpu, pipeline.run_ahead) == ("false", "true")
    _, pipeline = load_settings(path, ["pipeline.run_ahead=false"])
    assert pipeline.run_ahead == "false"


def test_a_switch_that_is_not_one_of_its_words_names_the_key() -> None:
    import pytest

    from dgr.config import ConfigError

    with pytest.raises(ConfigError, match=r"^pipeline\.run_ahead: expected one of auto, true, false, got 'maybe'$"):
        PipelineConfig(run_ahead="maybe")
    with pytest.raises(ConfigError, match=r"^pipeline\.use_gpu: expected one of auto, true, false, got 'yes'$"):
        PipelineConfig(use_gpu="yes")
