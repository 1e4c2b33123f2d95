"""One frozen, nested, typed configuration, validated when it is built.

A wrong value fails at once with the field's dotted name and what is allowed. The config flattens to
dotted keys (`solver.lr`) for MLflow params and Tune search spaces, and is rebuilt from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

STREAMS = ("split_mnist", "split_fashion_mnist", "permuted_mnist", "mnist_svhn", "svhn_mnist")
STREAM_KINDS = ("split", "domains", "permuted")  # general streams over `stream.sources`
STREAM_KIND = {"split_mnist": "split", "split_fashion_mnist": "split", "permuted_mnist": "permuted",
               "mnist_svhn": "domains", "svhn_mnist": "domains"}  # what each built-in stream is (dgr.streams.BUILT_IN)
TASKS_OF = {"split": "its class groups", "domains": "its sources", "permuted": "pixel permutations of its source"}
KIND_KEYS = {"num_tasks": "permuted", "classes_per_task": "split", "class_order": "split"}  # stream keys one kind reads
BUILT_IN_SOURCES = ("mnist", "fashion_mnist", "svhn")  # named alone; read from the data root
SOURCE_KINDS = BUILT_IN_SOURCES + ("folder", "parquet", "npz")  # these take a path: "folder:PATH"
FITS = ("resize", "pad")
SCENARIOS = ("task", "domain", "class")
ARMS = ("gr", "er", "none", "joint")
TARGETS = ("hard", "soft")
SOLVERS = ("mlp", "cnn")
GENERATORS = ("vae", "wgan-gp", "conv-vae", "conv-wgan-gp")
AUTO = "auto"  # generator.lr: the learning rate its kind was published with (AUTO_LR)
# VAE: the reference protocol (van de Ven & Tolias 2019); WGAN-GP: Gulrajani et al. 2017 (with Adam 0.5, 0.9).
AUTO_LR = {"vae": 1e-3, "conv-vae": 1e-3, "wgan-gp": 1e-4, "conv-wgan-gp": 1e-4}
PRECISIONS = ("fp32", "bf16")
DEVICES = ("cpu", "cuda", "auto")
RATIO_RULE = "1/t"
# task_rng seeds torch with ((seed * 1_000_003 + task) * 1_009 + rank) * 8 + stream, which must stay below
# 2**64: a seed below 2**31 leaves room for about 10**14 tasks.
SEED_LIMIT = 2**31


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the field's dotted name."""


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, got {value!r}")


def is_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here; inf and nan pass every comparison they should not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(section: str, obj: Any, name: str, low: int) -> None:
    value = getattr(obj, name)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    _check(ok, f"{section}.{name}", f"an integer >= {low}", value)


def _positive(section: str, obj: Any, name: str) -> None:
    value = getattr(obj, name)
    _check(is_number(value) and value > 0, f"{section}.{name}", "a finite number > 0", value)


def _choice(section: str, obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    _check(value in allowed, f"{section}.{name}", f"one of {', '.join(allowed)}", value)


def _added(default: Any) -> Any:
    """A field added after chains were registered: flattened (so hashed) only when it differs from its
    default, so configs that do not use it keep their config hash and their registries keep resuming."""
    return field(default=default, metadata={"flat_when_set": True})


def parse_source(text: str) -> tuple[str, str]:
    """"folder:PATH" -> ("folder", "PATH"); a built-in dataset is its bare name ("mnist")."""
    kind, _, path = text.partition(":")
    _check(kind in SOURCE_KINDS, "stream.sources", f"entries KIND[:PATH] with KIND one of {', '.join(SOURCE_KINDS)}",
           text)
    built_in = kind in BUILT_IN_SOURCES
    _check(bool(path) != built_in, "stream.sources", f"'{kind}' without a path" if built_in else
           f"a path after '{kind}:'", text)
    return kind, path


def _names(key: str, value: Any) -> tuple[str, ...]:
    # YAML gives a list, --set a comma-separated string; both become one canonical tuple.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    _check(ok, key, "a list of strings or one comma-separated string", value)
    return tuple(value)


@dataclass(frozen=True)
class StreamConfig:
    name: str = "split_mnist"  # a built-in stream, or split | domains | permuted over `sources`
    scenario: str = "class"
    num_tasks: int = 5  # permuted streams; split streams have one task per class group, domains one per source
    class_order: str = "fixed"  # "fixed" (0-1, 2-3, ...) or "seeded" (drawn from run.seed)
    train_samples: int = 0  # per task, 0 = all; small budgets for tests and quick sweeps
    test_samples: int = 0  # per task, 0 = all
    sources: tuple[str, ...] = _added(())  # "mnist" | "folder:PATH" | "parquet:PATH" | "npz:PATH"
    classes_per_task: int = _added(2)  # split streams
    class_names: tuple[str, ...] = _added(())  # label i is class_names[i]; folders default to sorted names
    image_size: int = _added(0)  # 0 keeps the sources' size; else every image becomes image_size^2
    fit: str = _added("resize")  # how images reach image_size: resize (bilinear) | pad (zero border)
    channels: int = _added(0)  # 0 keeps; 1 grey (luma); 3 RGB (grey replicated)
    validation: float = _added(0.0)  # fraction of each task's training data held out (seeded, per class)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _names("stream.sources", self.sources))
        object.__setattr__(self, "class_names", _names("stream.class_names", self.class_names))
        _choice("stream", self, "name", STREAMS + STREAM_KINDS)
        _choice("stream", self, "scenario", SCENARIOS)
        _choice("stream", self, "class_order", ("fixed", "seeded"))
        _int("stream", self, "num_tasks", 1)
        _int("stream", self, "train_samples", 0)
        _int("stream", self, "test_samples", 0)
        _int("stream", self, "classes_per_task", 2)
        _int("stream", self, "image_size", 0)
        _choice("stream", self, "fit", FITS)
        _check(self.channels in (0, 1, 3), "stream.channels", "0 (keep), 1 or 3", self.channels)
        v = self.validation
        _check(is_number(v) and 0 <= v < 1, "stream.validation", "a fraction in [0, 1)", v)
        _check(len(set(self.class_names)) == len(self.class_names), "stream.class_names", "distinct names",
               self.class_names)
        self._check_sources()
        self._check_kind_keys()

    def _check_kind_keys(self) -> None:
        """A key that only another kind of stream reads must be left at its default, not silently ignored
        (split MNIST with num_tasks 2 ran its five tasks)."""
        kind = STREAM_KIND.get(self.name, self.name)
        for key, owner in KIND_KEYS.items():
            if owner != kind:
                default = StreamConfig.__dataclass_fields__[key].default
                _check(getattr(self, key) == default, f"stream.{key}",
                       f"to be left out with a {self.name} stream, whose tasks are {TASKS_OF[kind]} ({key} is for "
                       f"{owner} streams)", getattr(self, key))

    def _check_sources(self) -> None:
        if self.name in STREAMS:  # a built-in stream fixes its sources and input shape
            for name in ("sources", "image_size", "fit", "channels", "class_names", "classes_per_task"):
                _check(getattr(self, name) == StreamConfig.__dataclass_fields__[name].default, f"stream.{name}",
                       f"to be left out with the built-in stream {self.name} (use name: split, domains or "
                       f"permuted)", getattr(self, name))
            return
        count = "one source" if self.name != "domains" else "one or more sources"
        _check(len(self.sources) == 1 or (self.name == "domains" and self.sources), "stream.sources",
               f"{count} for a {self.name} stream", self.sources)
        for text in self.sources:
            parse_source(text)


@dataclass(frozen=True)
class SolverConfig:
    kind: str = "mlp"
    hidden: int = 400
    layers: int = 2
    lr: float = 1e-3
    iterations: int = 2000
    batch_size: int = 128

    def __post_init__(self) -> None:
        _choice("solver", self, "kind", SOLVERS)
        _int("solver", self, "hidden", 1)
        _int("solver", self, "layers", 1)
        _positive("solver", self, "lr")
        _int("solver", self, "iterations", 0)
        _int("solver", self, "batch_size", 1)


@dataclass(frozen=True)
class GeneratorConfig:
    kind: str = "vae"  # vae | wgan-gp: fully connected; conv-vae | conv-wgan-gp: convolutional
    latent: int = 100
    hidden: int = 400  # fully connected kinds
    layers: int = 2  # fully connected kinds
    lr: float | str = AUTO  # "auto" follows the kind (AUTO_LR); read it through `learning_rate`
    iterations: int = 2000  # shares the solver's batches (solver.batch_size) and replayed inputs
    critic_steps: int = 5  # WGAN-GP only
    gradient_penalty: float = 10.0  # WGAN-GP only
    channels: int = _added(64)  # convolutional kinds: the first conv layer's channels (the second has twice)

    def __post_init__(self) -> None:
        _choice("generator", self, "kind", GENERATORS)
        _int("generator", self, "latent", 1)
        _int("generator", self, "hidden", 1)
        _int("generator", self, "layers", 1)
        lr = self.lr
        ok = lr == AUTO or (is_number(lr) and lr > 0)
        _check(ok, "generator.lr", f"'{AUTO}' or a finite number > 0", lr)
        _int("generator", self, "iterations", 0)
        _int("generator", self, "critic_steps", 1)
        _positive("generator", self, "gradient_penalty")
        _int("generator", self, "channels", 1)

    @property
    def convolutional(self) -> bool:
        return self.kind.startswith("conv-")

    @property
    def learning_rate(self) -> float:
        return AUTO_LR[self.kind] if self.lr == AUTO else float(self.lr)


@dataclass(frozen=True)
class ReplayConfig:
    arm: str = "gr"
    targets: str = "hard"  # hard: previous solver's argmax; soft: distillation at `temperature`
    temperature: float = 2.0
    ratio: float | str = RATIO_RULE  # weight r of the new task: "1/t" or a fixed value in (0, 1]

    def __post_init__(self) -> None:
        _choice("replay", self, "arm", ARMS)
        _choice("replay", self, "targets", TARGETS)
        _positive("replay", self, "temperature")
        r = self.ratio
        fixed = is_number(r) and 0 < r <= 1
        _check(fixed or r == RATIO_RULE, "replay.ratio", f"'{RATIO_RULE}' or a number in (0, 1]", r)

    def weight(self, task_number: int) -> float:
        """r for the task numbered `task_number` (1-based): the new task's weight in the loss."""
        return 1.0 / task_number if self.ratio == RATIO_RULE else float(self.ratio)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 1
    device: str = "cpu"
    precision: str = "fp32"  # bf16 autocasts matmuls (faster on GPUs and CPUs with AVX512-BF16, slower without)
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        seed = self.seed
        ok = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < SEED_LIMIT
        _check(ok, "run.seed", f"an integer in [0, {SEED_LIMIT - 1}]", seed)
        _choice("run", self, "device", DEVICES)
        _choice("run", self, "precision", PRECISIONS)
        _int("run", self, "eval_batch_size", 1)


@dataclass(frozen=True)
class Config:
    stream: StreamConfig = field(default_factory=StreamConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.solver.kind == "cnn" and self.stream.name not in ("mnist_svhn", "svhn_mnist"):
            size = self.stream.image_size
            _check(size > 0 and size % 8 == 0, "solver.kind",
                   "mlp for 28x28 streams (cnn needs 32x32x3 input, or stream.image_size a multiple of 8)", "cnn")


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(config)


def _left_out(section: Any, name: str, value: Any) -> bool:
    spec = {f.name: f for f in dataclasses.fields(section)}[name]
    return bool(spec.metadata.get("flat_when_set")) and value == spec.default


def flatten(config: Config) -> dict[str, Any]:
    """{"solver.lr": 0.001, ...}: MLflow params and Tune search-space keys. Fields added later are left
    out while they hold their default (see `_added`)."""
    return {f"{s}.{k}": v for s, values in to_dict(config).items() for k, v in values.items()
            if not _left_out(getattr(config, s), k, v)}


def unread_keys(config: Config) -> dict[str, str]:
    """Keys of the generator and replay sections that a run of `config` never reads, each with the reason
    (the config still takes them: one config serves every arm and generator kind). A sweep must not
    search over them: every value would give the same trials."""
    unread: dict[str, str] = {}
    arm, g = config.replay.arm, config.generator
    if arm != "gr":
        unread.update({f"generator.{key}": f"replay.arm={arm} trains no generator"
                       for key in GeneratorConfig.__dataclass_fields__})
        unread.update({f"replay.{key}": f"replay.arm={arm} labels no generated samples"
                       for key in ("targets", "temperature")})
        if arm in ("none", "joint"):
            unread["replay.ratio"] = f"replay.arm={arm} replays nothing"
        return unread
    if "wgan" not in g.kind:
        unread.update({f"generator.{key}": f"generator.kind={g.kind} is no WGAN-GP"
                       for key in ("critic_steps", "gradient_penalty")})
    layout, other_layouts_keys = ("convolutional", ("hidden", "layers")) if g.convolutional else \
        ("fully connected", ("channels",))
    unread.update({f"generator.{key}": f"generator.kind={g.kind} is {layout}" for key in other_layouts_keys})
    if config.replay.targets == "hard":
        unread["replay.temperature"] = "replay.targets=hard distils nothing"
    return unread


def set_but_unread(config: Config) -> dict[str, str]:
    """The keys of `unread_keys` that `config` sets away from their default, as `key=value: reason`."""
    values, defaults = to_dict(config), to_dict(Config())
    notes = {}
    for key, reason in unread_keys(config).items():
        section, _, name = key.partition(".")
        if values[section][name] != defaults[section][name]:
            notes[key] = f"{key}={values[section][name]} is not read: {reason}"
    return notes


def config_keys() -> list[str]:
    """Every dotted key a config accepts, including those `flatten` leaves out at their default."""
    return sorted(f"{s}.{k}" for s, values in to_dict(Config()).items() for k in values)


def sections(values: Mapping[str, Any], extra: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """The sections of a nested mapping (YAML's shape), each a dict (an empty section is None in YAML).
    `extra` names the sections a command reads besides the config's (`pipeline`, `sweep`), so an unknown
    section's error lists what that command allows."""
    allowed = [*_sections(), *extra]
    checked: dict[str, dict[str, Any]] = {}
    for section, inner in values.items():
        if section not in allowed:
            raise ConfigError(f"{section}: unknown config section (allowed: {', '.join(allowed)})")
        if inner is not None and not isinstance(inner, Mapping):
            raise ConfigError(f"{section}: expected a mapping of keys to values, got {inner!r}")
        checked[section] = dict(inner or {})
    return checked


def from_dict(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a config from a nested mapping (YAML's shape); unknown keys fail with their dotted name."""
    flat = {f"{section}.{k}": v for section, inner in sections(values).items() for k, v in inner.items()}
    return from_flat(flat, base or Config())


def from_flat(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Apply dotted-key values to `base` (default config); values keep their types (no parsing)."""
    nested: dict[str, dict[str, Any]] = to_dict(base or Config())
    for key, value in values.items():
        section, _, name = key.partition(".")
        if section not in nested or name not in nested[section]:
            raise ConfigError(f"{key}: unknown config key (known: {', '.join(config_keys())})")
        nested[section][name] = value
    try:
        return Config(**{s: cls(**nested[s]) for s, cls in _sections().items()})
    except TypeError as exc:  # a wrong type reaching a dataclass field comparison
        raise ConfigError(str(exc)) from exc


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from the command line, the value typed like the field it sets."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(f"{text}: expected key=value, e.g. solver.lr=0.001")
    if key not in config_keys():
        raise ConfigError(f"{key}: unknown config key")
    section, _, name = key.partition(".")
    return key, _coerce(key, raw, to_dict(Config())[section][name])


_RULES = {"replay.ratio": RATIO_RULE, "generator.lr": AUTO}  # keys that take a number or a rule's name


def _coerce(key: str, raw: str, default: Any) -> Any:
    if key in _RULES:
        return raw if raw == _RULES[key] else _number(key, raw, float)
    if isinstance(default, tuple):
        return _names(key, raw)  # stream.sources=mnist,fashion_mnist
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return _number(key, raw, int)
    if isinstance(default, float):
        return _number(key, raw, float)
    return raw


def _number(key: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {raw!r}") from None


def config_hash(config: Config) -> str:
    """Short stable hash of every setting: names runs and detects a changed config on resume.

    `generator.lr: auto` is hashed as the rate it stands for, so the default config keeps the hash it
    had when the rate was written out (1e-3), and `auto` and its value name the same chain.
    """
    flat = flatten(config)
    if flat["generator.lr"] == AUTO:
        flat["generator.lr"] = AUTO_LR[config.generator.kind]
    text = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
