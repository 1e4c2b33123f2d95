"""One frozen, nested, typed configuration, validated when it is built.

A wrong value fails at once with the field's dotted name and what is allowed. The config flattens to
dotted keys (`solver.lr`) for MLflow params and Tune search spaces, and is rebuilt from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

STREAMS = ("split_mnist", "split_fashion_mnist", "permuted_mnist", "mnist_svhn", "svhn_mnist")
SCENARIOS = ("task", "domain", "class")
ARMS = ("gr", "er", "none", "joint")
TARGETS = ("hard", "soft")
SOLVERS = ("mlp", "cnn")
GENERATORS = ("vae", "wgan-gp")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("cpu", "cuda", "auto")
RATIO_RULE = "1/t"


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the field's dotted name."""


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, got {value!r}")


def _int(section: str, obj: Any, name: str, low: int) -> None:
    value = getattr(obj, name)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    _check(ok, f"{section}.{name}", f"an integer >= {low}", value)


def _positive(section: str, obj: Any, name: str) -> None:
    value = getattr(obj, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    _check(ok, f"{section}.{name}", "a number > 0", value)


def _choice(section: str, obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    _check(value in allowed, f"{section}.{name}", f"one of {', '.join(allowed)}", value)


@dataclass(frozen=True)
class StreamConfig:
    name: str = "split_mnist"
    scenario: str = "class"
    num_tasks: int = 5  # permuted MNIST only; split streams always have 5 tasks, domain pairs 2
    class_order: str = "fixed"  # "fixed" (0-1, 2-3, ...) or "seeded" (drawn from run.seed)
    train_samples: int = 0  # per task, 0 = all; small budgets for tests and quick sweeps
    test_samples: int = 0  # per task, 0 = all

    def __post_init__(self) -> None:
        _choice("stream", self, "name", STREAMS)
        _choice("stream", self, "scenario", SCENARIOS)
        _choice("stream", self, "class_order", ("fixed", "seeded"))
        _int("stream", self, "num_tasks", 1)
        _int("stream", self, "train_samples", 0)
        _int("stream", self, "test_samples", 0)


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
    kind: str = "vae"
    latent: int = 100
    hidden: int = 400
    layers: int = 2
    lr: float = 1e-3
    iterations: int = 2000  # shares the solver's batches (solver.batch_size) and replayed inputs
    critic_steps: int = 5  # WGAN-GP only
    gradient_penalty: float = 10.0  # WGAN-GP only

    def __post_init__(self) -> None:
        _choice("generator", self, "kind", GENERATORS)
        _int("generator", self, "latent", 1)
        _int("generator", self, "hidden", 1)
        _int("generator", self, "layers", 1)
        _positive("generator", self, "lr")
        _int("generator", self, "iterations", 0)
        _int("generator", self, "critic_steps", 1)
        _positive("generator", self, "gradient_penalty")


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
        fixed = isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r <= 1
        _check(fixed or r == RATIO_RULE, "replay.ratio", f"'{RATIO_RULE}' or a number in (0, 1]", r)

    def weight(self, task_number: int) -> float:
        """r for the task numbered `task_number` (1-based): the new task's weight in the loss."""
        return 1.0 / task_number if self.ratio == RATIO_RULE else float(self.ratio)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 1
    device: str = "cpu"
    precision: str = "fp32"  # bf16 autocasts matmuls (faster on CPUs with AVX512-BF16 and on GPUs)
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        _int("run", self, "seed", 0)
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
        if self.stream.name == "mnist_svhn" or self.stream.name == "svhn_mnist":
            _check(self.solver.kind == "cnn" or self.solver.kind == "mlp", "solver.kind", "mlp or cnn",
                   self.solver.kind)
        elif self.solver.kind == "cnn":
            _check(False, "solver.kind", "mlp for 28x28 streams (cnn needs 32x32x3 input)", "cnn")


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(config)


def flatten(config: Config) -> dict[str, Any]:
    """{"solver.lr": 0.001, ...}: MLflow params and Tune search-space keys."""
    return {f"{s}.{k}": v for s, values in to_dict(config).items() for k, v in values.items()}


def from_dict(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a config from a nested mapping (YAML's shape); unknown keys fail with their dotted name."""
    base = base or Config()
    flat: dict[str, Any] = {}
    for section, inner in values.items():
        if section not in _sections():
            raise ConfigError(f"{section}: unknown config section (allowed: {', '.join(_sections())})")
        if not isinstance(inner, Mapping):
            raise ConfigError(f"{section}: expected a mapping of keys to values, got {inner!r}")
        flat.update({f"{section}.{k}": v for k, v in inner.items()})
    return from_flat(flat, base)


def from_flat(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Apply dotted-key values to `base` (default config); values keep their types (no parsing)."""
    nested: dict[str, dict[str, Any]] = to_dict(base or Config())
    for key, value in values.items():
        section, _, name = key.partition(".")
        if section not in nested or name not in nested[section]:
            raise ConfigError(f"{key}: unknown config key (known: {', '.join(sorted(flatten(Config())))})")
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
    default = flatten(Config()).get(key)
    if default is None and key not in flatten(Config()):
        raise ConfigError(f"{key}: unknown config key")
    return key, _coerce(key, raw, default)


def _coerce(key: str, raw: str, default: Any) -> Any:
    if key == "replay.ratio":
        return raw if raw == RATIO_RULE else _number(key, raw, float)
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
    """Short stable hash of every setting: names runs and detects a changed config on resume."""
    text = json.dumps(flatten(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
