"""The sweep's search space: YAML `sweep:` section -> Ray Tune samplers, validated before any trial starts.

    sweep:
      samples: 8
      grace_period: 1                       # ASHA: tasks every trial gets before it may be stopped
      reduction_factor: 2
      max_concurrent: 0                     # trials at once; 0: as many as the cluster can give workers
      space:                                # dotted config keys -> one Tune sampler each
        replay.ratio: {choice: ["1/t", 0.25, 0.5, 0.75]}
        generator.latent: {choice: [16, 100]}
        generator.hidden: {choice: [100, 400]}

`samples` defaults to 8, or to 1 for a space of grids only, where more samples would repeat the same runs.
Samplers: choice, grid (every value, once per sample), uniform, loguniform (floats), randint (integers
in [low, high), high excluded as in Tune). The values a sampler can produce (a range by its ends) are
checked in every combination with the other keys' (`check_combinations`), so an r outside (0, 1], a
negative capacity, a float for an integer key, or values of two keys that no config takes together
(`solver.kind: cnn` with a `stream.image_size` that is no multiple of 8) fail at once with their dotted
keys. With grids and choices only, these are all the trials' configs; a range is checked by its ends only.
Trials are compared on validation accuracy, so every trial's config must hold validation data out of
each task (`stream.validation` > 0).
"""

from __future__ import annotations

import itertools
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from dgr.config import Config, ConfigError, config_keys, from_flat, is_number, unread_keys
from dgr.datasets import DatasetError

DEFAULT_SPACE: dict[str, dict[str, list[Any]]] = {
    "replay.ratio": {"choice": ["1/t", 0.25, 0.5, 0.75]},
    "generator.latent": {"choice": [16, 100]},
    "generator.hidden": {"choice": [100, 400]},
}
SAMPLERS = ("choice", "grid", "uniform", "loguniform", "randint")
MAX_COMBINATIONS = 10_000  # checked before a sweep starts: building 10 000 configs takes about 1.5 s on 2 cores
Check = Callable[[Mapping[str, Any]], None]  # raises ConfigError or DatasetError for swept values trials cannot take


@dataclass(frozen=True)
class SweepSpec:
    samples: int = 8  # parse_sweep's default is 1 for a space of grids only
    space: dict[str, dict[str, list[Any]]] = field(default_factory=lambda: dict(DEFAULT_SPACE))
    grace_period: int = 1  # tasks a trial always gets before ASHA may stop it
    reduction_factor: int = 2
    max_concurrent: int = 0  # 0: as many as the cluster's CPUs (and GPUs) can give workers at once

    def identity(self) -> dict[str, str]:
        """What a sweep is besides its base config, as its MLflow run's params: a rerun resumes the sweep
        only with these (`max_concurrent` may change between runs: it fits the sweep to the cluster)."""
        return {"space": json.dumps(self.space), "samples": str(self.samples),
                "grace_period": str(self.grace_period), "reduction_factor": str(self.reduction_factor)}

    def tune_space(self) -> dict[str, Any]:
        from ray import tune

        samplers = {"choice": tune.choice, "grid": tune.grid_search, "uniform": lambda v: tune.uniform(*v),
                    "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
        return {key: samplers[kind](values) for key, spec in self.space.items() for kind, values in spec.items()}

    def values(self) -> dict[str, list[Any]]:
        """Each swept key's values to check: every value of a grid or choice, a range's ends."""
        return {key: _values_to_check(key, *next(iter(spec.items()))) for key, spec in self.space.items()}

    def combinations(self) -> list[dict[str, Any]]:
        """Every combination of the swept keys' values to check, the last key changing fastest: with grids
        and choices only, every config a trial can get. Past MAX_COMBINATIONS, each value alone."""
        values = self.values()
        if math.prod(len(listed) for listed in values.values()) > MAX_COMBINATIONS:
            return [{key: value} for key, listed in values.items() for value in listed]
        return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


def check_combinations(spec: SweepSpec, check: Check) -> None:
    """The first combination of swept values that `check` refuses fails in one line naming the swept keys
    its error depends on (those for which another of their values changes it), or the error alone when
    it is the base config's (no swept key changes it)."""
    values = spec.values()
    for combination in spec.combinations():
        error = _refusal(check, combination)
        if error is None:
            continue
        keys = [key for key in combination if any(_refusal(check, {**combination, key: other}) != error
                                                   for other in values[key] if other != combination[key])]
        if not keys:
            if _refusal(check, {}) == error:
                raise ConfigError(error)
            keys = list(combination)
        if len(keys) == 1 and error.startswith(f"{keys[0]}:"):
            raise ConfigError(f"sweep.space.{error}")
        raise ConfigError(f"sweep.space: {' with '.join(f'{key}={combination[key]}' for key in keys)}: {error}")


def _refusal(check: Check, values: Mapping[str, Any]) -> str | None:
    try:
        check(values)
    except (ConfigError, DatasetError) as exc:
        return str(exc)
    return None


def _field_type(key: str) -> Any:
    section, _, name = key.partition(".")
    return typing.get_type_hints(typing.get_type_hints(Config)[section])[name]


def _values_to_check(key: str, kind: str, values: Any) -> list[Any]:
    """The values of `key` that its sampler can produce, for the config to check: a range by its ends,
    as the type Tune samples it in."""
    where = f"sweep.space.{key}.{kind}"
    if kind in ("choice", "grid"):
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: expected a non-empty list of values, got {values!r}")
        return values
    if not isinstance(values, list) or len(values) != 2 or not all(is_number(v) for v in values) \
            or values[0] >= values[1]:
        raise ConfigError(f"{where}: expected [low, high] with low < high, got {values!r}")
    if kind == "loguniform" and values[0] <= 0:
        raise ConfigError(f"{where}: expected [low, high] with 0 < low < high, got {values!r}")
    if kind == "randint":
        if not all(isinstance(v, int) for v in values):
            raise ConfigError(f"{where}: expected integers [low, high] (high excluded), got {values!r}")
        return [values[0], values[1] - 1]  # Tune's randint excludes the upper bound
    if _field_type(key) is int:
        raise ConfigError(f"{where}: {key} takes integers and {kind} samples floats; use randint: [low, high] "
                          "(high excluded), choice or grid")
    return [float(v) for v in values]


def parse_sweep(values: Mapping[str, Any] | None, base: Config) -> SweepSpec:
    """The `sweep:` section, checked against `base`: unknown keys and impossible values fail here."""
    values = dict(values or {})
    known = {"samples", "space", "grace_period", "reduction_factor", "max_concurrent"}
    for name in values:
        if name not in known:
            raise ConfigError(f"sweep.{name}: unknown sweep key (known: {', '.join(sorted(known))})")
    space = values.get("space", DEFAULT_SPACE)
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"sweep.space: expected a mapping of config keys to samplers, got {space!r}")
    keys = set(config_keys())
    for key, spec in space.items():
        if key not in keys:
            raise ConfigError(f"sweep.space.{key}: unknown config key")
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ConfigError(f"sweep.space.{key}: expected one sampler of {', '.join(SAMPLERS)}, got {spec!r}")
        _values_to_check(key, *next(iter(spec.items())))
    settings = {k: values[k] for k in ("samples", "grace_period", "reduction_factor", "max_concurrent") if k in values}
    if _grids_only(space):
        settings.setdefault("samples", 1)  # every combination once; more would repeat the same runs
    spec = SweepSpec(space={k: dict(v) for k, v in space.items()}, **settings)
    for name, low in (("samples", 1), ("grace_period", 1), ("reduction_factor", 2), ("max_concurrent", 0)):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"sweep.{name}: expected an integer >= {low}, got {value!r}")
    _check_repeats(spec)
    configs: list[Config] = []  # once every combination is valid: each one's config, in order
    check_combinations(spec, lambda values: configs.append(from_flat(values, base)))
    _check_read(spec, configs)
    _check_validation(spec.values().get("stream.validation"), base)
    return spec


def _check_read(spec: SweepSpec, configs: list[Config]) -> None:
    """A swept key that no trial's config reads (a generator key under ER) would run the same trials for
    each of its values: refused, with the reason of the first combination."""
    unread = [unread_keys(config) for config in configs]
    for key in spec.space:
        if all(key in keys for keys in unread):
            raise ConfigError(f"sweep.space.{key}: no trial reads it ({unread[0][key]}), so each of its values "
                              "would run the same trials")


def _grids_only(space: Mapping[str, Mapping[str, Any]]) -> bool:
    return all(next(iter(sampler)) == "grid" for sampler in space.values())


def _check_repeats(spec: SweepSpec) -> None:
    """Each sample runs every grid combination once and draws the other samplers anew: with grids only, a
    second sample repeats the first's trials exactly (same configs, same `run.seed`)."""
    if spec.samples > 1 and _grids_only(spec.space):
        raise ConfigError(f"sweep.samples: {spec.samples} samples of a space of grids only run each combination "
                          f"{spec.samples} times with the same run.seed, so the repeats give the same results; "
                          "use 1, or sweep run.seed (e.g. run.seed: {grid: [1, 2]}) for runs with other seeds")


def _check_validation(swept: list[Any] | None, base: Config) -> None:
    """Every trial selects on validation data: the values swept for `stream.validation`, else the base's."""
    for value in swept or [base.stream.validation]:
        if value <= 0:
            where, hint = ("sweep.space.stream.validation", "") if swept else \
                ("stream.validation", " (e.g. --set stream.validation=0.1)")
            raise ConfigError(f"{where}: a sweep selects and stops trials on validation accuracy, never on test "
                              f"accuracy; expected a fraction > 0{hint}, got {value!r}")
