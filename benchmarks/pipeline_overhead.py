"""The pipeline (Ray Train + MLflow registry) against the core's single-process runner, seed by seed.

Every run is a fresh process timed whole, as users run it: the core runner (`run_sequence` with all
the machine's threads) and the main job `pipelines/sequence.py` (local Ray, embedded SQLite MLflow) with
its default worker layout and with fixed layouts (`--runners default,1,2`). Same config, same seeds.

- accuracy, mean +- SEM over seeds: is a 2-worker DDP chain within noise of a 1-worker one?
- wall ratio pipeline / core: what the distribution costs (start-up of Ray, the worker group and the
  MLflow store, and the driver's per-task work: evaluate, figures, log the task run, register).
- the least ratio Ray Train allows (`--runners core,plain,floor`): `floor` is a whole process that starts
  the local Ray and one `fit()` of the default worker plan whose loop trains nothing, `plain` a process
  that imports torch; 1 + (floor - plain) / core is what a pipeline would reach if all its own work
  (MLflow, the data, the driver's per-task work) cost nothing.

Runs are appended to `--json` as they finish; a rerun skips those already there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from children import checkout_env

REPO = Path(__file__).resolve().parents[1]


def core_run(overrides: list[str], data_root: str, callback: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run in a child process (`--core`): the core runner on the default config plus `overrides`, with
    all the machine's threads; `callback` gets `run_sequence`'s progress events."""
    import torch

    sys.path.insert(0, str(REPO))
    from dgr.sequence import run_sequence
    from dgr.streams import build_stream
    from pipelines.settings import load_settings

    torch.set_num_threads(os.cpu_count() or 1)
    config, _ = load_settings(None, overrides)
    result = run_sequence(config, build_stream(config.stream, Path(data_root), config.run.seed), callback=callback)
    return {"average_accuracy": result.average_accuracy, "accuracy_matrix": result.accuracy_matrix,
            "train_seconds": [t.seconds for t in result.training]}


def nothing(settings: dict[str, Any]) -> None:
    """The floor's worker loop: trains nothing."""


def process_start() -> float:
    """When this process started (Linux: /proc), as a `time.time()` value."""
    ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def floor_run() -> None:
    """Run in a child process (`--floor`): what the main job cannot avoid on Ray Train, with no training,
    no data and no MLflow: import Ray Train, start the local Ray as the main job does, resolve its default
    worker plan, run one `fit()` of a worker loop that does nothing, shut Ray down. Its phases go to
    stderr (from the interpreter's start: imports, Ray start, fit, Ray shutdown)."""
    import ray

    sys.path.insert(0, str(REPO))
    from pipelines.cluster import alive_nodes, driver_node, plan_workers, ray_init_args
    from pipelines.settings import PipelineConfig
    from pipelines.trainer import chain_trainer

    stamps = [process_start(), time.time()]
    ray.init(**ray_init_args())
    plan = plan_workers(PipelineConfig(), alive_nodes(), driver_node())
    stamps.append(time.time())
    with tempfile.TemporaryDirectory() as storage:
        chain_trainer({}, plan, 0, "floor", storage, loop=nothing).fit()
    stamps.append(time.time())
    ray.shutdown()
    stamps.append(time.time())
    phases = ", ".join(f"{name} {b - a:.1f} s" for name, a, b in
                       zip(["imports", "Ray start", "fit", "Ray shutdown"], stamps, stamps[1:]))
    print(f"floor phases: {phases}", file=sys.stderr, flush=True)


def timed(args: list[str], cwd: str) -> float:
    env = checkout_env()
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=cwd, env=env, stdout=subprocess.DEVNULL)  # this checkout's code
    return time.perf_counter() - start


# Runners that train nothing, for the least ratio any Ray Train pipeline can reach here: `plain` is a
# Python process that imports torch (where the core starts), `floor` the Ray Train floor (`floor_run`).
FIXED = {"plain": ["-c", "import torch"], "floor": [__file__, "--floor"]}


def measure(runner: str, overrides: list[str], data_root: str) -> dict[str, Any]:
    """One whole-process run of `runner` ("core", "default", a worker count, "plain" or "floor")."""
    with tempfile.TemporaryDirectory() as workdir:
        out = f"{workdir}/result.json"
        if runner in FIXED:  # no training: wall time only
            return {"wall_seconds": timed([sys.executable, *FIXED[runner]], workdir)}
        if runner == "core":
            args = [sys.executable, __file__, "--core", out, "--data-root", data_root]
        else:
            args = [sys.executable, "-m", "pipelines.sequence", "--data-root", data_root,
                    "--workdir", workdir, "--json", out]
        layout = [] if runner in ("core", "default") else [
            f"pipeline.num_workers={runner}", f"pipeline.threads_per_worker={max(1, (os.cpu_count() or 1) // int(runner))}"]
        for item in [*overrides, *layout]:
            args += ["--set", item]
        wall = timed(args, workdir)
        result = json.loads(Path(out).read_text())
    return {"wall_seconds": wall, "average_accuracy": result["average_accuracy"],
            "accuracy_matrix": result["accuracy_matrix"], "train_seconds": sum(result["train_seconds"]),
            "register_seconds": sum(result.get("register_seconds", [])),
            "run_ahead": result.get("workers", {}).get("run_ahead", False)}


def summary(runs: list[dict[str, Any]], runners: list[str]) -> str:
    def label(runner: str) -> str:
        if runner == "core":
            return f"core run_sequence (1 process, {os.cpu_count()} threads)"
        if runner == "default":
            return "main job, default config"
        return f"pipeline, {runner} worker(s)"

    lines = ["| runner | avg. accuracy (%), mean +- SEM | per seed (%) | wall s (mean) | wall ratio to core |",
             "|---|---|---|---|---|"]
    core_wall = {r["seed"]: r["wall_seconds"] for r in runs if r["runner"] == "core"}
    for runner in runners:
        chosen = sorted((r for r in runs if r["runner"] == runner), key=lambda r: r["seed"])
        if not chosen or runner in FIXED:  # those train nothing: see `least_ratio`
            continue
        acc = [100 * r["average_accuracy"] for r in chosen]
        sem = statistics.stdev(acc) / math.sqrt(len(acc)) if len(acc) > 1 else float("nan")
        ratios = [r["wall_seconds"] / core_wall[r["seed"]] for r in chosen if r["seed"] in core_wall]
        ratio = f"{statistics.mean(ratios):.2f}" if ratios else "-"
        lines.append(f"| {label(runner)} | {statistics.mean(acc):.2f} +- {sem:.2f} (n={len(acc)}) | "
                     f"{', '.join(f'{a:.2f}' for a in acc)} | {statistics.mean(r['wall_seconds'] for r in chosen):.1f} | "
                     f"{ratio} |")
    return "\n".join(lines)


def least_ratio(runs: list[dict[str, Any]]) -> str:
    """Markdown, per seed (round) that ran `plain` and `floor`: the Ray Train floor beyond a plain torch
    process and, where `core` ran too, the least wall ratio to the core it allows, 1 + (floor - plain) / core."""
    lines = ["| seed | plain s | floor s | floor - plain s | core s | least ratio to core |", "|---|---|---|---|---|---|"]
    for seed in sorted({r["seed"] for r in runs}):
        wall = {r["runner"]: r["wall_seconds"] for r in runs if r["seed"] == seed}
        if {"plain", "floor"} <= wall.keys():
            extra = wall["floor"] - wall["plain"]
            core, ratio = (f"{wall['core']:.1f}", f"{1 + extra / wall['core']:.3f}") if "core" in wall else ("-", "-")
            lines.append(f"| {seed} | {wall['plain']:.1f} | {wall['floor']:.1f} | {extra:.1f} | {core} | {ratio} |")
    return "\n".join(lines)


def where_the_time_goes(runs: list[dict[str, Any]]) -> str:
    """Markdown, per run: training (the training loops: the core's, or rank 0's in the workers), the
    driver's per-task work (evaluate, figures, MLflow model, audit, register; the workers wait, unless they
    run ahead: then it overlaps the next task's training, all but the last task's), the rest (process and
    Ray start, worker group, data, evaluation in the core; for a run ahead, minus the overlapped work)."""
    lines = ["| runner | seed | workers run ahead | wall s | training s | driver per-task work s | rest s |",
             "|---|---|---|---|---|---|---|"]
    for r in (r for r in runs if "train_seconds" in r):  # in the order they ran (older files lack the split)
        rest = r["wall_seconds"] - r["train_seconds"] - r["register_seconds"]
        ahead = "-" if r["runner"] == "core" else ("yes" if r.get("run_ahead") else "no")
        lines.append(f"| {r['runner']} | {r['seed']} | {ahead} | {r['wall_seconds']:.1f} | {r['train_seconds']:.1f} | "
                     f"{r['register_seconds']:.1f} | {rest:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--iterations", type=int, default=500,
                   help="solver and generator iterations per task (2000: the reference protocol)")
    p.add_argument("--runners", default="core,default,1,2",
                   help="comma list: core (the single-process runner), default (the main job as configured), "
                        "a pipeline worker count, plain (a process that imports torch) or floor (the local "
                        "Ray and one fit() that trains nothing)")
    p.add_argument("--seeds", default="1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--json", default=None, help="results file (default results/pipeline_overhead_<it>.json)")
    p.add_argument("--core", default=None, help=argparse.SUPPRESS)  # child process: write the core's result
    p.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)  # child process: the Ray Train floor
    args = p.parse_args()
    if args.core:
        Path(args.core).write_text(json.dumps(core_run(args.set, args.data_root)))
        return
    if args.floor:
        floor_run()
        return
    data_root = str(Path(args.data_root).resolve())  # the runs work in their own temporary folders
    overrides = [f"solver.iterations={args.iterations}", f"generator.iterations={args.iterations}",
                 "run.device=cpu", *args.set]
    path = Path(args.json or f"results/pipeline_overhead_{args.iterations}.json")
    runs: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    runners = args.runners.split(",")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for runner in runners:  # back to back per seed, so a slow spell of the machine hits all runners
            key = {"runner": runner, "seed": seed, "overrides": overrides}
            if any({k: r[k] for k in key} == key for r in runs):
                continue
            run = {**key, **measure(runner, [*overrides, f"run.seed={seed}"], data_root)}
            runs.append(run)
            accuracy = f"{100 * run['average_accuracy']:.2f} %" if "average_accuracy" in run else "no training"
            print(f"{runner:8s} seed {seed}: {accuracy} in {run['wall_seconds']:.1f} s", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(runs, indent=1))
    print(f"\nsplit MNIST, class-IL, GR, {args.iterations} iterations per task, 5 tasks, seeds {args.seeds}\n")
    chosen = [r for r in runs if r["overrides"] == overrides]
    print(summary(chosen, runners))
    print()
    print(where_the_time_goes(chosen))
    if any(r["runner"] in FIXED for r in chosen):
        print()
        print(least_ratio(chosen))


if __name__ == "__main__":
    main()
