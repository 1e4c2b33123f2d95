"""Ray Tune sweep of the replay ratio and the generator capacity (and any other config key).

    dgr-sweep --config configs/sweep_split_mnist.yaml --samples N [--data-root DIR] [--set k=v ...]
    python -m pipelines.sweep ...     (the same; `python pipelines/sweep.py` under `ray job submit`)

Each trial (`pipelines.trial.ChainTrial`) runs a whole task chain (`pipelines.chain.run_chain`, whose
Ray Train `TorchTrainer` runs inside the trial: the Train V2 + Tune pattern, not Trainer-in-Tuner) and
reports after every task its accuracy so far on the tasks' validation data (`stream.validation`), so
ASHA stops hopeless trials after the first tasks; a stopped trial ends its chain and its worker group
before it goes. The objective is the final validation accuracy; test accuracy is only reported. The trials' workers are planned once, from the cluster (`pipelines.cluster.trial_plan`:
by default one worker per trial, on a fraction of a GPU with `pipeline.gpus_per_worker`); trials hold
(almost) no CPU themselves so their Train workers can run on a 2-core machine. One MLflow run for the
sweep; each trial's chain run nests under it; the best trial's final scholar gets the alias `best`, and
once every trial has ended the other trials' registered models are deleted (their runs stay): one
registered model per sweep. Rerunning the same sweep restores it with Tune (finished trials stay); a
sweep is named by its base config and search settings, and a name given again with other settings fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from dgr.config import Config, ConfigError, StreamConfig, config_hash, flatten, from_flat
from dgr.datasets import resolve_data_root
from dgr.scholar import scholar_from_spec, scholar_spec
from dgr.streams import build_stream
from pipelines import cli, figures, registry, tracking
from pipelines.chain import EXPERIMENT, scholar_inputs
from pipelines.cluster import TRIAL_CPU, alive_nodes, check_placeable, join_ray, pinned, trial_plan, trial_slots
from pipelines.search_space import SweepSpec, check_combinations, parse_sweep
from pipelines.settings import DEFAULT_CONFIG, PipelineConfig, check_batch_split, load_settings, read_yaml


TRIAL_ID = "00000_00000"  # the shape of Tune's trial ids (5 hex digits, a counter), for checking names


class SweepInterrupted(Exception):
    """Tune stopped on a signal before every trial ended; its saved state lets a rerun resume it."""


def _check_sweep_name(sweep: str, pipeline: PipelineConfig) -> None:
    """Each trial's chain is named `<sweep>-<trial id>` (its `pipeline.name`, and its registered model):
    a sweep name that makes those names fail `pipeline.name`'s rule (the registry's too) fails here and
    not in every trial."""
    try:
        dataclasses.replace(pipeline, name=f"{sweep}-{TRIAL_ID}")
    except ConfigError as exc:
        raise ConfigError(f"--name {sweep!r}: trials are named {sweep}-<trial id>, and {exc}") from None


@contextlib.contextmanager
def _interruptible() -> Iterator[threading.Event]:
    """Around Tune's `fit`: Ctrl-C and SIGTERM (`ray job stop`, `kill`) end the sweep through Tune's own
    SIGUSR1 path (experiment state saved, trials stopped, so `Tuner.restore` resumes it) and are
    remembered: after an interrupt Tune's results look like those of a finished sweep whose running
    trials had stopped. Before `fit` has taken SIGUSR1 (whose default ends the process) an interrupt is
    an ordinary `KeyboardInterrupt`."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signals reach the main thread only; Tune then catches none either
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        interrupted.set()
        if signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = {signum: signal.signal(signum, on_interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # until `fit` takes it
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield interrupted
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)


def _tuner(spec: SweepSpec, config: Config, pipeline: PipelineConfig, data_root: Path, workdir: Path,
           sweep: str, sweep_run: str, num_tasks: int, storage: str, concurrent: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from pipelines.trial import ChainTrial

    trainable = tune.with_resources(
        tune.with_parameters(ChainTrial, base=flatten(config), pipeline=vars(pipeline), data_root=str(data_root),
                             workdir=str(workdir), sweep=sweep, sweep_run=sweep_run),
        {"cpu": TRIAL_CPU})
    path = Path(storage) / sweep
    if tune.Tuner.can_restore(str(path)):
        print(f"restoring sweep {sweep} from {path}", flush=True)
        return tune.Tuner.restore(str(path), trainable, resume_errored=True)
    scheduler = ASHAScheduler(time_attr="tasks", max_t=num_tasks, grace_period=spec.grace_period,
                              reduction_factor=spec.reduction_factor)
    return tune.Tuner(
        trainable,
        param_space=spec.tune_space(),
        tune_config=tune.TuneConfig(metric="validation_accuracy", mode="max", scheduler=scheduler,
                                    num_samples=spec.samples, max_concurrent_trials=concurrent),
        # no Tune checkpoint (a class trainable's default is one at its end): the registry is the chain's,
        # and a trial on a node without the storage path would fail to persist one (Ray checks a marker
        # file the driver wrote), so a sweep on several nodes needs no shared storage
        run_config=tune.RunConfig(name=sweep, storage_path=storage,
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)),
    )


def summarize(rows: list[dict[str, Any]], keys: list[str], grace: int) -> str:
    """Markdown table of trials, best validation accuracy first; stopped trials after finished ones. The test
    accuracy is reported beside it, never used to choose.

    Every trial learns `grace` tasks before ASHA may stop it, so the accuracy after them compares all trials.
    """
    rows = sorted(rows, key=lambda r: (r["finished"], r["validation_accuracy"]), reverse=True)
    graced = f"validation after {grace} task{'s' if grace != 1 else ''}"
    lines = ["| trial | " + " | ".join(keys) + f" | {graced} | tasks | validation accuracy "
             "| test accuracy | forgetting | status |",
             "|" + "---|" * (len(keys) + 7)]
    for r in rows:
        status = "finished" if r["finished"] else f"stopped after task {r['tasks'] - 1}"
        early = "-" if r["graced_accuracy"] is None else f"{100 * r['graced_accuracy']:.2f} %"
        lines.append(f"| {r['trial']} | " + " | ".join(str(r[k]) for k in keys) + f" | {early} | {r['tasks']} | "
                     f"{100 * r['validation_accuracy']:.2f} % | {100 * r['average_accuracy']:.2f} % | "
                     f"{100 * r['forgetting']:.2f} | {status} |")
    return "\n".join(lines)


def _graced_accuracy(result: Any, grace: int) -> float | None:
    """The trial's validation accuracy after `grace` tasks, from its reported history."""
    history = result.metrics_dataframe
    if history is None or "tasks" not in history:
        return None
    early = history.loc[history["tasks"] == grace, "validation_accuracy"]
    return float(early.iloc[-1]) if len(early) else None


@contextlib.contextmanager
def _ended_if_failed(sweep: str, experiment: str, sweep_run: str) -> Iterator[None]:
    """A sweep that stops before its end leaves its run KILLED (interrupted: Ctrl-C, SIGTERM) or FAILED,
    and its trials' chain runs that are still open KILLED, not RUNNING (Tune ends the trials' actors
    without waiting for a chain in the middle of a task); a rerun with the same name logs into them again."""
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, (SweepInterrupted, KeyboardInterrupt))
        tracking.close_open_trial_runs(experiment, sweep_run)
        tracking.end_run(sweep_run, "KILLED" if interrupted else "FAILED")
        if isinstance(exc, KeyboardInterrupt):  # outside Tune's fit
            raise _interrupted(sweep) from None
        raise


def _interrupted(sweep: str) -> SweepInterrupted:
    return SweepInterrupted(f"sweep {sweep} interrupted; rerun with --name {sweep} to resume it")


def _check_trials(spec: SweepSpec, config: Config, data_root: Path) -> int:
    """What a trial's chain checks before its workers start, for every combination of swept values
    (`check_combinations`): its stream's data and a scholar these inputs can feed; and the sweep's own
    rule that every trial learns as many tasks as the first (ASHA's rungs and the objective are task
    counts). Each stream is built once, each architecture once. Returns the number of tasks."""
    streams: dict[tuple[StreamConfig, int], tuple[tuple[int, ...], int, int]] = {}  # -> shape, outputs, tasks
    architectures: set[str] = set()

    def check(values: Mapping[str, Any]) -> None:
        trial = from_flat(values, config)
        data = trial.stream, trial.run.seed
        if data not in streams:
            tasks = build_stream(trial.stream, data_root, trial.run.seed)
            streams[data] = (*scholar_inputs(trial, tasks), len(tasks))
        shape, outputs, count = streams[data]
        first = next(iter(streams.values()))[2]  # the first trial's: a refused combination ends the checks
        if count != first:
            raise ConfigError(f"{count} tasks where the first trial has {first}; a sweep compares trials task by "
                              "task, so every trial needs as many")
        architecture = scholar_spec(trial, shape, outputs)
        if (key := json.dumps(architecture)) not in architectures:
            scholar_from_spec(architecture)  # a conv generator whose inputs' sides it cannot halve twice fails
            architectures.add(key)

    check_combinations(spec, check)
    return next(iter(streams.values()))[2]


def sweep_params(spec: SweepSpec, config: Config) -> dict[str, str]:
    """The sweep's identity, logged as its run's params: its base config (by hash) and search settings."""
    return {"config_hash": config_hash(config), **spec.identity()}


def default_sweep_name(params: Mapping[str, str]) -> str:
    """Named by everything it searches with, so a changed space starts a new sweep, and the same command
    run again resumes the same one."""
    return "sweep-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def _check_same_sweep(experiment: str, sweep: str, params: Mapping[str, str]) -> None:
    """Tune restores a sweep by its name, with the space, samples and scheduler it was started with: a
    rerun under the same name with other settings would show the old sweep's trials as the new one's."""
    found = tracking.find_sweep_run(experiment, sweep)
    if found is None:
        return
    for key, value in params.items():
        started = found.data.params.get(key)  # a sweep started before a param was logged lacks it
        if started is not None and started != value[:tracking.PARAM_LIMIT]:
            what = "base config (config hash)" if key == "config_hash" else f"sweep.{key}"
            raise ConfigError(f"--name {sweep}: sweep {sweep} was started with another {what}: {started}, not "
                              f"{value}; rerun it as it was started to resume it, or give this one another --name")


def run_sweep(config: Config, pipeline: PipelineConfig, spec: SweepSpec, data_root: Path, workdir: Path,
              name: str) -> dict[str, Any]:
    params = sweep_params(spec, config)
    sweep = name or default_sweep_name(params)
    _check_sweep_name(sweep, pipeline)
    data_root, workdir = data_root.absolute(), workdir.absolute()  # trials run in their own directories
    num_tasks = _check_trials(spec, config, data_root)
    tracking.configure_tracking(workdir)
    experiment = tracking.ensure_experiment(EXPERIMENT, workdir)
    _check_same_sweep(experiment, sweep, params)
    fixed = join_ray()
    nodes = alive_nodes()
    plan = trial_plan(pipeline, nodes)
    if fixed:
        check_placeable(plan, nodes, pipeline)
    check_combinations(spec, lambda values: check_batch_split(from_flat(values, config), plan.num_workers))
    sweep_run = tracking.start_sweep_run(experiment, sweep, params)
    with _ended_if_failed(sweep, experiment, sweep_run):
        concurrent = spec.max_concurrent or trial_slots(nodes, plan)
        print(f"sweep {sweep}: up to {concurrent} trial(s) at a time, each with {plan.describe()}", flush=True)
        storage, pipeline = pipeline.ray_storage(workdir), pinned(pipeline, plan)
        with _interruptible() as interrupted:
            results = _tuner(spec, config, pipeline, data_root, workdir, sweep, sweep_run, num_tasks, storage,
                             concurrent).fit()
        if interrupted.is_set():
            raise _interrupted(sweep)
        keys = list(spec.space)
        rows = []
        for result in results:
            if result.metrics and "tasks" in result.metrics:
                params = {k: result.config[k] for k in keys}
                rows.append({"trial": result.metrics["trial_id"], **params, **{m: result.metrics[m] for m in
                             ("tasks", "validation_accuracy", "average_accuracy", "forgetting", "registered_model")},
                             "graced_accuracy": _graced_accuracy(result, spec.grace_period),
                             "finished": result.metrics["tasks"] == num_tasks})
        for r in rows:  # Tune ends the last trials' actors without waiting for their chains to close their runs
            tracking.close_open_chain_run(experiment, r["registered_model"], *(("FINISHED", r["average_accuracy"])
                                          if r["finished"] else ("KILLED", None)), step=r["tasks"] - 1)
        finished = [r for r in rows if r["finished"]]
        if not finished:
            raise RuntimeError(f"sweep {sweep}: no trial finished all {num_tasks} tasks")
        best = max(finished, key=lambda r: r["validation_accuracy"])
        best_task = registry.chain_tasks(best["registered_model"], config_hash(from_flat({**flatten(config),
                                                                                  **{k: best[k] for k in keys}})))
        registry.set_alias(best["registered_model"], "best", best_task[-1].version)
        for r in rows:  # one registered model per sweep: the best chain's (see README, Sweeps)
            if r["registered_model"] != best["registered_model"]:
                registry.drop_chain(r["registered_model"])
        table = summarize(rows, keys, spec.grace_period)
        with tempfile.TemporaryDirectory() as folder:
            files = {"sweep_summary.md": Path(folder) / "sweep_summary.md",
                     "sweep_trials.json": Path(folder) / "sweep_trials.json"}
            files["sweep_summary.md"].write_text(table + "\n")
            files["sweep_trials.json"].write_text(json.dumps(rows, indent=1))
            files["sweep_accuracy.png"] = figures.sweep_plot(rows, keys, Path(folder) / "sweep_accuracy.png")
            tracking.finish_run(sweep_run, files, {"best_model": f"models:/{best['registered_model']}@best"})
        return {"sweep": sweep, "table": table, "trials": rows, "best": best,
                "best_model_uri": f"models:/{best['registered_model']}@best"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = cli.parser("Ray Tune sweep of replay ratio and generator capacity.", "YAML config with a `sweep:` section")
    p.add_argument("--samples", type=int, default=None,
                   help="samples of the search space (overrides sweep.samples): each runs every grid combination "
                        "once and draws the other samplers anew")
    p.add_argument("--name", default="",
                   help="sweep name (default: from the config and the sweep settings); reuse it to resume")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cli.check_outputs(args)
        config, pipeline = load_settings(args.config, args.set)  # checks every section of the file
        sweep_values = dict(read_yaml(args.config or DEFAULT_CONFIG).get("sweep") or {})
        if args.samples is not None:
            sweep_values["samples"] = args.samples
        spec = parse_sweep(sweep_values, config)
        with cli.terminate_as_interrupt():  # entered before Ray starts, so `join_ray` keeps it
            summary = run_sweep(config, pipeline, spec, resolve_data_root(args.data_root), args.workdir, args.name)
    except cli.BAD_INPUT as exc:
        return cli.failed(exc, 2)
    except SweepInterrupted as exc:
        return cli.failed(exc, 130)
    except KeyboardInterrupt:  # before the sweep's run started: nothing to resume yet
        return cli.failed(RuntimeError("interrupted before the sweep started; rerun the same command to start it"),
                          130)
    except RuntimeError as exc:  # e.g. every trial failed; Tune's log above has the trials' tracebacks
        return cli.failed(exc, 1)
    print(summary["table"])
    print(f"best: trial {summary['best']['trial']} -> {summary['best_model_uri']}")
    if args.json is not None:
        cli.write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
