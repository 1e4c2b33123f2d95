"""dgr.config: reference defaults, validation with dotted names, flattening, overrides, hashing."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from dgr.config import (SEED_LIMIT, Config, ConfigError, GeneratorConfig, ReplayConfig, RunConfig, SolverConfig,
                        StreamConfig, config_hash, flatten, from_dict, from_flat, parse_override, sections,
                        set_but_unread, unread_keys)
from dgr.training import task_rng


def error_of(build: Callable[[], Any]) -> str:
    with pytest.raises(ConfigError) as info:
        build()
    return str(info.value)


def test_defaults_are_the_reference_protocol() -> None:
    c = Config()
    assert (c.solver.kind, c.solver.layers, c.solver.hidden) == ("mlp", 2, 400)
    assert (c.solver.lr, c.solver.batch_size, c.solver.iterations) == (1e-3, 128, 2000)
    assert (c.generator.kind, c.generator.latent, c.generator.hidden) == ("vae", 100, 400)
    assert (c.replay.ratio, c.replay.temperature) == ("1/t", 2.0)


@pytest.mark.parametrize("t", [1, 2, 3, 5])
def test_ratio_rule_weighs_the_new_task_one_over_t(t: int) -> None:
    assert ReplayConfig(ratio="1/t").weight(t) == pytest.approx(1 / t)


@pytest.mark.parametrize("t", [1, 2, 5])
def test_fixed_ratio_is_the_same_for_every_task(t: int) -> None:
    assert ReplayConfig(ratio=0.3).weight(t) == 0.3


def test_flatten_round_trips() -> None:
    config = from_flat({"solver.lr": 0.01, "replay.ratio": 0.25, "stream.scenario": "task", "run.seed": 7})
    flat = flatten(config)
    assert flat["solver.lr"] == 0.01 and flat["stream.scenario"] == "task"
    assert from_flat(flat) == config


def test_from_dict_applies_nested_values() -> None:
    config = from_dict({"solver": {"hidden": 64}, "replay": {"arm": "er"}})
    assert config.solver.hidden == 64 and config.replay.arm == "er"
    assert config.generator == GeneratorConfig()


def test_unknown_section_is_named() -> None:
    assert error_of(lambda: from_dict({"bogus": {"x": 1}})).startswith("bogus")


def test_unknown_key_is_named_with_its_section() -> None:
    assert error_of(lambda: from_dict({"solver": {"bogus": 1}})).startswith("solver.bogus")


@pytest.mark.parametrize("ratio", [0, 1.5, -0.1, "half"])
def test_bad_replay_ratio_fails_at_construction(ratio: Any) -> None:
    assert error_of(lambda: ReplayConfig(ratio=ratio)).startswith("replay.ratio")


@pytest.mark.parametrize("ratio", [1, 1.0, 0.5, "1/t"])
def test_good_replay_ratio_is_accepted(ratio: Any) -> None:
    assert ReplayConfig(ratio=ratio).ratio == ratio


@pytest.mark.parametrize("build, name", [
    (lambda: SolverConfig(lr=0), "solver.lr"),
    (lambda: GeneratorConfig(latent=0), "generator.latent"),
    (lambda: GeneratorConfig(latent=-3), "generator.latent"),
    (lambda: StreamConfig(scenario="foo"), "stream.scenario"),
    (lambda: ReplayConfig(arm="x"), "replay.arm"),
])
def test_bad_value_fails_with_its_dotted_name(build: Callable[[], Any], name: str) -> None:
    assert error_of(build).startswith(name)


def test_bad_value_through_from_flat_fails_with_its_dotted_name() -> None:
    assert error_of(lambda: from_flat({"solver.lr": "fast"})).startswith("solver.lr")


def test_override_is_typed_like_its_field() -> None:
    key, value = parse_override("solver.lr=0.01")
    assert key == "solver.lr" and value == 0.01 and isinstance(value, float)
    assert parse_override("solver.iterations=50") == ("solver.iterations", 50)


def test_override_keeps_the_ratio_rule_and_parses_a_fixed_ratio() -> None:
    assert parse_override("replay.ratio=1/t") == ("replay.ratio", "1/t")
    assert parse_override("replay.ratio=0.5") == ("replay.ratio", 0.5)


def test_override_with_wrong_type_names_the_key() -> None:
    assert error_of(lambda: parse_override("solver.iterations=abc")).startswith("solver.iterations")


def test_override_of_unknown_key_names_it() -> None:
    assert error_of(lambda: parse_override("solver.bogus=1")).startswith("solver.bogus")


def test_config_hash_is_stable_for_equal_configs() -> None:
    assert config_hash(Config()) == config_hash(from_flat({}))
    assert config_hash(from_flat({"solver.lr": 0.01})) == config_hash(from_flat({"solver.lr": 0.01}))


def test_config_hash_changes_with_any_field() -> None:
    base = config_hash(Config())
    assert config_hash(from_flat({"solver.lr": 0.01})) != base
    assert config_hash(from_flat({"run.seed": 2})) != base


def test_cnn_solver_on_a_28x28_stream_fails() -> None:
    message = error_of(lambda: Config(stream=StreamConfig(name="split_mnist"), solver=SolverConfig(kind="cnn")))
    assert message.startswith("solver.kind")


def test_cnn_solver_on_a_32x32x3_stream_is_accepted() -> None:
    config = Config(stream=StreamConfig(name="mnist_svhn"), solver=SolverConfig(kind="cnn"))
    assert config.solver.kind == "cnn"


# The hashes these configs had before the stream fields for users' own data were added: registries of
# chains that do not use the new fields must keep resuming.
HASHES_BEFORE = {"default": "e8b12c000407", "mnist_svhn_cnn": "bf6a7fb3fdbb"}


def test_config_hash_of_configs_without_the_new_stream_fields_is_unchanged() -> None:
    assert config_hash(Config()) == HASHES_BEFORE["default"]
    cnn = from_flat({"stream.name": "mnist_svhn", "solver.kind": "cnn"})
    assert config_hash(cnn) == HASHES_BEFORE["mnist_svhn_cnn"]


def test_new_stream_fields_are_flattened_only_when_set() -> None:
    assert "stream.validation" not in flatten(Config()) and "stream.sources" not in flatten(Config())
    config = from_flat({"stream.name": "domains", "stream.sources": ("mnist", "npz:site"), "stream.validation": 0.1})
    flat = flatten(config)
    assert flat["stream.sources"] == ("mnist", "npz:site") and flat["stream.validation"] == 0.1
    assert "stream.image_size" not in flat and from_flat(flat) == config
    assert config_hash(config) != config_hash(from_flat({**flat, "stream.validation": 0.2}))


def test_sources_from_a_yaml_list_or_a_comma_separated_override_are_equal() -> None:
    key, value = parse_override("stream.sources=folder:a, npz:/data/b")
    assert (key, value) == ("stream.sources", ("folder:a", "npz:/data/b"))
    as_list = from_dict({"stream": {"name": "domains", "sources": ["folder:a", "npz:/data/b"]}})
    assert as_list == from_flat({"stream.name": "domains", key: value})
    assert parse_override("stream.validation=0.2") == ("stream.validation", 0.2)
    assert parse_override("stream.image_size=32") == ("stream.image_size", 32)


@pytest.mark.parametrize("stream, name", [
    ({"name": "split_mnist", "sources": "mnist"}, "stream.sources"),
    ({"name": "mnist_svhn", "image_size": 28}, "stream.image_size"),
    ({"name": "split"}, "stream.sources"),
    ({"name": "split", "sources": "mnist,svhn"}, "stream.sources"),
    ({"name": "domains", "sources": "cifar"}, "stream.sources"),
    ({"name": "domains", "sources": "folder"}, "stream.sources"),
    ({"name": "domains", "sources": "mnist:somewhere"}, "stream.sources"),
    ({"name": "domains", "sources": [1, 2]}, "stream.sources"),
    ({"name": "split", "sources": "mnist", "classes_per_task": 1}, "stream.classes_per_task"),
    ({"validation": 1.0}, "stream.validation"),
    ({"validation": -0.1}, "stream.validation"),
    ({"channels": 2, "name": "split", "sources": "mnist"}, "stream.channels"),
    ({"fit": "crop", "name": "split", "sources": "mnist"}, "stream.fit"),
    ({"class_names": "a,a", "name": "split", "sources": "mnist"}, "stream.class_names"),
])
def test_bad_stream_fields_fail_with_their_dotted_name(stream: dict[str, Any], name: str) -> None:
    assert error_of(lambda: StreamConfig(**stream)).startswith(name)


@pytest.mark.parametrize("stream, key, value, tasks, owner", [
    ({"name": "split_mnist"}, "num_tasks", 2, "its class groups", "permuted"),
    ({"name": "split", "sources": "mnist"}, "num_tasks", 2, "its class groups", "permuted"),
    ({"name": "mnist_svhn"}, "num_tasks", 2, "its sources", "permuted"),
    ({"name": "domains", "sources": "mnist,svhn"}, "classes_per_task", 3, "its sources", "split"),
    ({"name": "permuted", "sources": "mnist"}, "classes_per_task", 3, "pixel permutations of its source", "split"),
    ({"name": "permuted_mnist"}, "class_order", "seeded", "pixel permutations of its source", "split"),
])
def test_a_key_only_another_kind_of_stream_reads_is_refused(
        stream: dict[str, Any], key: str, value: Any, tasks: str, owner: str) -> None:
    """Split MNIST with num_tasks 2 ran all five tasks without a word; a permuted stream ignored class_order."""
    StreamConfig(**stream)  # the key left at its default
    assert error_of(lambda: StreamConfig(**stream, **{key: value})) == (
        f"stream.{key}: expected to be left out with a {stream['name']} stream, whose tasks are {tasks} ({key} is "
        f"for {owner} streams), got {value!r}")


def test_each_kind_of_stream_takes_its_own_keys() -> None:
    assert StreamConfig(name="permuted", sources="mnist", num_tasks=2).num_tasks == 2
    assert StreamConfig(name="split", sources="mnist", classes_per_task=5, class_order="seeded").classes_per_task == 5
    assert StreamConfig(class_order="seeded").class_order == "seeded"  # split_mnist is a split stream


def test_cnn_solver_on_a_stream_resized_to_a_multiple_of_eight() -> None:
    stream = StreamConfig(name="domains", sources=("mnist", "svhn"), image_size=32, channels=3)
    assert Config(stream=stream, solver=SolverConfig(kind="cnn")).solver.kind == "cnn"


@pytest.mark.parametrize("kind, rate", [("vae", 1e-3), ("conv-vae", 1e-3), ("wgan-gp", 1e-4), ("conv-wgan-gp", 1e-4)])
def test_generator_lr_auto_is_the_rate_its_kind_was_published_with(kind: str, rate: float) -> None:
    assert GeneratorConfig(kind=kind).learning_rate == rate
    assert GeneratorConfig(kind=kind, lr=0.5).learning_rate == 0.5


def test_choosing_a_wgan_gp_on_a_flattened_vae_config_takes_its_rate() -> None:
    # What a sweep does: the base config flattened, one key sampled on top of it.
    assert from_flat({**flatten(Config()), "generator.kind": "conv-wgan-gp"}).generator.learning_rate == 1e-4
    yaml_like = from_dict({"generator": {"kind": "vae", "lr": "auto"}})
    assert from_flat({"generator.kind": "wgan-gp"}, yaml_like).generator.learning_rate == 1e-4


def test_generator_lr_auto_hashes_like_the_rate_it_stands_for() -> None:
    assert config_hash(from_flat({"generator.lr": 1e-3})) == config_hash(Config())
    wgan = {"generator.kind": "wgan-gp", "generator.iterations": 1000}
    assert config_hash(from_flat({**wgan, "generator.lr": 1e-4})) == config_hash(from_flat(wgan))
    assert config_hash(from_flat({**wgan, "generator.lr": 1e-3})) != config_hash(from_flat(wgan))


def test_generator_lr_override_takes_auto_or_a_number() -> None:
    assert parse_override("generator.lr=auto") == ("generator.lr", "auto")
    assert parse_override("generator.lr=0.0002") == ("generator.lr", 0.0002)
    assert error_of(lambda: parse_override("generator.lr=fast")).startswith("generator.lr")


@pytest.mark.parametrize("values", [{"lr": 0}, {"lr": "fast"}, {"channels": 0}, {"kind": "dcgan"}])
def test_bad_generator_fields_fail_with_their_dotted_name(values: dict[str, Any]) -> None:
    assert error_of(lambda: GeneratorConfig(**values)).startswith(f"generator.{next(iter(values))}")


def test_generator_channels_is_flattened_only_when_set() -> None:
    assert "generator.channels" not in flatten(from_flat({"generator.kind": "conv-vae"}))
    config = from_flat({"generator.kind": "conv-vae", "generator.channels": 32})
    assert flatten(config)["generator.channels"] == 32 and from_flat(flatten(config)) == config
    assert parse_override("generator.channels=16") == ("generator.channels", 16)


@pytest.mark.parametrize("build, name", [
    (lambda: SolverConfig(lr=float("inf")), "solver.lr"),
    (lambda: GeneratorConfig(lr=float("inf")), "generator.lr"),
    (lambda: GeneratorConfig(gradient_penalty=float("inf")), "generator.gradient_penalty"),
    (lambda: ReplayConfig(temperature=float("inf")), "replay.temperature"),
    (lambda: ReplayConfig(temperature=float("nan")), "replay.temperature"),
    (lambda: ReplayConfig(ratio=float("nan")), "replay.ratio"),
    (lambda: StreamConfig(validation=float("nan")), "stream.validation"),
])
def test_non_finite_numbers_fail_with_their_dotted_name(build: Callable[[], Any], name: str) -> None:
    assert error_of(build).startswith(f"{name}: expected")


def test_inf_written_on_the_command_line_is_refused() -> None:
    key, value = parse_override("solver.lr=inf")
    assert error_of(lambda: from_flat({key: value})) == "solver.lr: expected a finite number > 0, got inf"


def test_a_seed_too_large_for_the_task_seeds_is_refused() -> None:
    key, value = parse_override("run.seed=99999999999999999999")
    assert error_of(lambda: from_flat({key: value})).startswith("run.seed: expected an integer in [0, ")
    assert error_of(lambda: RunConfig(seed=SEED_LIMIT)).startswith("run.seed")
    assert error_of(lambda: RunConfig(seed=-1)).startswith("run.seed")


def test_the_largest_seed_still_seeds_every_task_rank_and_stream() -> None:
    assert RunConfig(seed=SEED_LIMIT - 1).seed == SEED_LIMIT - 1
    task_rng(SEED_LIMIT - 1, task=10_000, rank=1_000, stream=7)  # torch takes seeds below 2**64 only


def test_sections_name_a_section_that_is_not_a_mapping() -> None:
    assert error_of(lambda: from_dict({"solver": 5})) == "solver: expected a mapping of keys to values, got 5"
    assert error_of(lambda: sections({"pipeline": [1]}, ("pipeline",))).startswith("pipeline: expected a mapping")
    assert sections({"solver": None}) == {"solver": {}}  # a YAML section with every key commented out


def test_an_unknown_section_lists_the_sections_the_reader_allows() -> None:
    assert error_of(lambda: from_dict({"pipeline": {}})).endswith("(allowed: stream, solver, generator, replay, run)")
    message = error_of(lambda: sections({"pipline": {}}, ("pipeline", "sweep")))
    assert message == "pipline: unknown config section (allowed: stream, solver, generator, replay, run, pipeline, sweep)"


def test_unread_keys_are_those_the_arm_and_generator_kind_never_read() -> None:
    assert set(unread_keys(Config())) == {"generator.critic_steps", "generator.gradient_penalty",
                                          "generator.channels", "replay.temperature"}  # GR, a VAE, hard targets
    wgan = from_flat({"generator.kind": "conv-wgan-gp", "replay.targets": "soft"})
    assert set(unread_keys(wgan)) == {"generator.hidden", "generator.layers"}
    er = unread_keys(from_flat({"replay.arm": "er"}))
    generator_keys = {f"generator.{k}" for k in GeneratorConfig.__dataclass_fields__}
    assert {k for k in er if k.startswith("generator.")} == generator_keys
    assert "replay.ratio" not in er and "replay.targets" in er  # ER weighs its stored data by r, with their labels
    assert "replay.ratio" in unread_keys(from_flat({"replay.arm": "none"}))


def test_only_unread_keys_set_away_from_their_default_are_noted() -> None:
    assert set_but_unread(Config()) == {}  # a VAE leaves the WGAN-GP keys unread, at their defaults
    assert set_but_unread(from_flat({"replay.arm": "er", "generator.latent": 32, "solver.hidden": 32})) == {
        "generator.latent": "generator.latent=32 is not read: replay.arm=er trains no generator"}
