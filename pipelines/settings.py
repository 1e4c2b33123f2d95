"""Reading configs: YAML files in `configs/` plus `--set key=value` overrides.

A file holds the science sections of `dgr.config.Config` and one `pipeline` section for how the chain
runs (workers, GPU, retries), which never changes the config hash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from dgr.config import Config, ConfigError, from_dict, parse_override

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "split_mnist.yaml"


@dataclass(frozen=True)
class PipelineConfig:
    name: str = ""  # registered model of the chain; "" derives it from the stream, scenario and arm
    num_workers: int = 2
    use_gpu: str = "auto"  # "auto" (when CUDA is visible to the driver), "true" or "false"
    threads_per_worker: int = 1
    max_failures: int = 2  # Ray Train restarts of a worker group that lost a worker
    storage_path: str = ""  # Ray Train checkpoints: a folder or s3://bucket/prefix; "" = ./ray_results
    worker_cpus: float = 0.0  # CPUs a worker reserves; 0 = threads_per_worker (sweeps use 0.99, see sweep.py)

    def __post_init__(self) -> None:
        for name, low in (("num_workers", 1), ("threads_per_worker", 1), ("max_failures", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"pipeline.{name}: expected an integer >= {low}, got {value!r}")
        if not isinstance(self.worker_cpus, (int, float)) or self.worker_cpus < 0:
            raise ConfigError(f"pipeline.worker_cpus: expected a number >= 0, got {self.worker_cpus!r}")
        if self.use_gpu not in ("auto", "true", "false"):
            raise ConfigError(f"pipeline.use_gpu: expected one of auto, true, false, got {self.use_gpu!r}")
        if not isinstance(self.name, str) or any(c in self.name for c in " /@:"):
            raise ConfigError(f"pipeline.name: expected a name without spaces, '/', '@' or ':', got {self.name!r}")

    def chain_name(self, config: Config) -> str:
        if self.name:
            return self.name
        arm = config.replay.arm + ("-distill" if config.replay.arm == "gr" and config.replay.targets == "soft" else "")
        return f"dgr-{config.stream.name}-{config.stream.scenario}-{arm}"


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{line}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (stream, solver, ...), got {type(values).__name__}")
    return values


def load_settings(path: Path | None, overrides: Sequence[str] = ()) -> tuple[Config, PipelineConfig]:
    """Config and pipeline settings from a YAML file (default: split MNIST) and `key=value` overrides."""
    values = read_yaml(path or DEFAULT_CONFIG)
    values.pop("sweep", None)  # read by pipelines/sweep.py
    pipeline_values = dict(values.pop("pipeline", None) or {})
    science: dict[str, dict[str, Any]] = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    known_pipeline = {f.name: f.type for f in dataclasses.fields(PipelineConfig)}
    for text in overrides:
        key, sep, raw = text.partition("=")
        section, _, name = key.partition(".")
        if not sep:
            raise ConfigError(f"{text}: expected key=value, e.g. solver.lr=0.001")
        if section == "pipeline":
            if name not in known_pipeline:
                raise ConfigError(f"{key}: unknown config key (pipeline keys: {', '.join(known_pipeline)})")
            default = getattr(PipelineConfig(), name)
            pipeline_values[name] = _typed(key, raw, default)
        else:
            key, value = parse_override(text)
            science.setdefault(section, {})[name] = value
    for name in pipeline_values:
        if name not in known_pipeline:
            raise ConfigError(f"pipeline.{name}: unknown config key (pipeline keys: {', '.join(known_pipeline)})")
    return from_dict(science), PipelineConfig(**pipeline_values)


def _typed(key: str, raw: str, default: Any) -> Any:
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {raw!r}") from None
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected int, got {raw!r}") from None
    return raw
