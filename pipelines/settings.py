"""Reading configs: YAML files in `configs/` plus `--set key=value` overrides.

A file holds the science sections of `dgr.config.Config` and one `pipeline` section for how the chain
runs (workers, GPUs, retries), which never changes the config hash. `auto` values are resolved against
the Ray cluster once it is joined (`pipelines.cluster.plan_workers`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from dgr.config import Config, ConfigError, from_dict, is_number, parse_override, sections

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "split_mnist.yaml"
AUTO = "auto"
MAX_TITLE = 60  # characters of a chain name's stream part
# A chain's name names its registered model, its runs (in MLflow search filters and model URIs) and its
# Ray Train run folder (with a 13-character suffix): letters, digits, '.', '_' and '-' are safe in all of
# them, and 100 characters stay well inside MLflow's 256 for a registered model and a file name's 255.
MAX_NAME = 100
CHAIN_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
CHAIN_NAME_RULE = f"up to {MAX_NAME} letters, digits, '.', '_' or '-', the first a letter or digit"
PIPELINE_SECTIONS = ("pipeline", "sweep")  # what a pipeline config file holds besides `dgr.config.Config`'s sections


SWITCHES = ("use_gpu", "run_ahead")  # auto | true | false


@dataclass(frozen=True)
class PipelineConfig:
    name: str = ""  # registered model of the chain; "" derives it from the stream, scenario and arm
    num_workers: int | str = AUTO  # auto: one per GPU on a GPU cluster, else one
    use_gpu: str = AUTO  # auto: when the cluster has a GPU; "true" or "false"
    gpus_per_worker: float = 1.0  # a fraction (e.g. 0.25) packs several sweep trials on one GPU
    threads_per_worker: int | str = AUTO  # auto: the CPUs the worker reserves
    worker_cpus: float = 0.0  # CPUs a worker reserves; 0 = its threads, or its share of a node when auto
    max_failures: int = 2  # Ray Train restarts of a worker group that lost a worker
    storage_path: str = ""  # Ray Train's run state: a folder or s3://bucket/prefix; "" = <workdir>/ray_results
    log_every: int = 500  # iterations between two points of a task run's loss curves (and log lines)
    run_ahead: str = AUTO  # train task k+1 while the driver registers k; auto: when it costs the workers no CPU

    def __post_init__(self) -> None:
        for name in SWITCHES:  # YAML reads an unquoted true / false as a bool
            if isinstance(getattr(self, name), bool):
                object.__setattr__(self, name, str(getattr(self, name)).lower())
        for name, low in (("num_workers", 1), ("threads_per_worker", 1), ("max_failures", 0), ("log_every", 1)):
            value, auto = getattr(self, name), name in ("num_workers", "threads_per_worker")
            if value == AUTO and auto:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                allowed = "'auto' or an integer" if auto else "an integer"
                raise ConfigError(f"pipeline.{name}: expected {allowed} >= {low}, got {value!r}")
        if not is_number(self.worker_cpus) or self.worker_cpus < 0:
            raise ConfigError(f"pipeline.worker_cpus: expected a finite number >= 0, got {self.worker_cpus!r}")
        if not is_number(self.gpus_per_worker) or not 0 < self.gpus_per_worker <= 1:
            raise ConfigError(f"pipeline.gpus_per_worker: expected a number in (0, 1], got {self.gpus_per_worker!r}")
        for name in SWITCHES:
            if getattr(self, name) not in (AUTO, "true", "false"):
                raise ConfigError(f"pipeline.{name}: expected one of auto, true, false, got {getattr(self, name)!r}")
        if self.name != "" and not (isinstance(self.name, str) and CHAIN_NAME.fullmatch(self.name)):
            raise ConfigError(f"pipeline.name: expected {CHAIN_NAME_RULE}, got {self.name!r}")

    def chain_name(self, config: Config) -> str:
        """`pipeline.name`, else dgr-<stream>-<scenario>-<arm>, where a general stream names its sources
        (`dgr-domains-site_a.site_b-domain-gr`), so two streams over different data never share a chain."""
        if self.name:
            return self.name
        arm = config.replay.arm + ("-distill" if config.replay.arm == "gr" and config.replay.targets == "soft" else "")
        return f"dgr-{_stream_title(config)}-{config.stream.scenario}-{arm}"

    def ray_storage(self, workdir: Path) -> str:
        """Where Ray Train (and Tune) keep their run state. Only processes on the driver's node write a
        local default: the chain reports no Ray checkpoints (the registry holds the scholars)."""
        return self.storage_path or str((workdir / "ray_results").resolve())


def _stream_title(config: Config) -> str:
    """The stream's name, with its sources' names for a general stream (a digest when they run long)."""
    stream = config.stream
    if not stream.sources:
        return stream.name
    names = [re.sub(r"[^A-Za-z0-9_]+", "_", Path(text.partition(":")[2] or text).name).strip("_") or "source"
             for text in stream.sources]
    title = f"{stream.name}-{'.'.join(names)}"
    if len(title) > MAX_TITLE:
        title = f"{title[:MAX_TITLE - 9]}-{hashlib.sha256(repr(stream.sources).encode()).hexdigest()[:8]}"
    return title


def check_batch_split(config: Config, num_workers: int) -> None:
    """The global batch is split evenly across the workers: one that does not divide fails here."""
    if config.solver.batch_size % num_workers:
        raise ConfigError(f"solver.batch_size: {config.solver.batch_size} does not divide among "
                          f"pipeline.num_workers = {num_workers} workers; use a multiple of {num_workers}")


class _Loader(yaml.SafeLoader):
    """YAML 1.2's floats: PyYAML follows YAML 1.1, which reads `1e-3` (no dot) and `1.5e3` (no exponent
    sign) as strings; here they are numbers, as `--set solver.lr=1e-3` is. A quoted '1e-3' stays a string."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        values = yaml.load(path.read_text(), Loader=_Loader)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected a UTF-8 YAML config)") from None
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
    science = sections(read_yaml(path or DEFAULT_CONFIG), PIPELINE_SECTIONS)
    science.pop("sweep", None)  # read by pipelines/sweep.py
    pipeline_values = science.pop("pipeline", {})
    known_pipeline = [f.name for f in dataclasses.fields(PipelineConfig)]
    for text in overrides:
        key, sep, raw = text.partition("=")
        section, _, name = key.partition(".")
        if not sep:
            raise ConfigError(f"{text}: expected key=value, e.g. solver.lr=0.001")
        if section == "pipeline":
            if name not in known_pipeline:
                raise ConfigError(f"{key}: unknown config key (pipeline keys: {', '.join(known_pipeline)})")
            pipeline_values[name] = _typed(key, raw, PARSERS.get(name, str))
        else:
            key, value = parse_override(text)
            science.setdefault(section, {})[name] = value
    for name in pipeline_values:
        if name not in known_pipeline:
            raise ConfigError(f"pipeline.{name}: unknown config key (pipeline keys: {', '.join(known_pipeline)})")
    config, pipeline = from_dict(science), PipelineConfig(**pipeline_values)
    if pipeline.num_workers != AUTO:
        check_batch_split(config, pipeline.num_workers)
    return config, pipeline


def _auto_or_int(raw: str) -> int | str:
    return AUTO if raw == AUTO else int(raw)


PARSERS: dict[str, Callable[[str], Any]] = {
    "num_workers": _auto_or_int, "threads_per_worker": _auto_or_int, "max_failures": int, "log_every": int,
    "gpus_per_worker": float, "worker_cpus": float,
}


def _typed(key: str, raw: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(raw)
    except ValueError:
        expected = {int: "int", float: "float", _auto_or_int: "'auto' or int"}.get(parse, "a value")
        raise ConfigError(f"{key}: expected {expected}, got {raw!r}") from None
