"""Where the main job's time goes, phase by phase (the fixed cost of Ray, Ray Train and MLflow).

    .venv/bin/python benchmarks/pipeline_timeline.py --data-root ../shared/data [--iterations 1]
        [--rounds 3] [--set key=value ...]

Each run is the main job (`pipelines.sequence`, local Ray, embedded SQLite MLflow) in a fresh process,
as users run it, on split MNIST with `--iterations` solver and generator iterations per task (1: nothing
but the fixed cost). The driver's calls are wrapped with timestamps here, and the workers stamp the
first and last iteration of every task through the chain's worker hook. The runs inherit this process's
environment, so a Ray or Ray Train switch set on the command line (e.g.
RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0) applies to them; compare two settings by alternating runs of this
command, since the machine drifts between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PHASES = ["python and imports", "data", "MLflow store", "Ray start", "chain run, gate, trainer",
          "worker group start", "training loops", "driver per task", "worker group shutdown",
          "Ray shutdown, exit", "hand-offs"]


def stamp(path: str, what: str) -> None:
    with open(path, "a") as out:
        out.write(f"{time.time():.4f} {what}\n")


def stamp_iteration(rank: int, progress: Any, path: str) -> None:
    """The worker hook (runs in the Ray worker): first and last iteration of each task, rank 0."""
    if rank == 0 and progress.iteration in (1, progress.iterations):
        stamp(path, f"iteration task{progress.task} {progress.iteration}")


def child(stamps: str, argv: list[str]) -> int:
    """The main job, its driver's phases stamped."""
    from pipelines import chain, registry, sequence, tracking, trainer

    stamp(stamps, "imported")

    def timed(owner: Any, name: str) -> None:
        call = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stamp(stamps, f"> {name}")
            try:
                return call(*args, **kwargs)
            finally:
                stamp(stamps, f"< {name}")
        setattr(owner, name, wrapper)

    for name in ("build_stream", "_plan", "_register_task"):
        timed(chain, name)
    for name in ("configure_tracking", "ensure_experiment"):
        timed(tracking, name)
    timed(registry, "chain_tasks")
    timed(trainer.Fit, "start")
    timed(trainer.Fit, "join")
    hook = chain.WorkerHook("benchmarks.pipeline_timeline:stamp_iteration", {"path": stamps})
    status = sequence.main(argv, hook=hook)
    stamp(stamps, "returned")
    return status


def phases(lines: list[str], start: float, end: float) -> dict[str, float]:
    events = [(float(t) - start, what) for t, what in (line.split(" ", 1) for line in lines)]

    def at(what: str) -> float:
        return next(t for t, w in events if w == what)

    def spent(name: str) -> float:
        opened = [t for t, w in events if w == f"> {name}"]
        closed = [t for t, w in events if w == f"< {name}"]
        return sum(c - o for o, c in zip(opened, closed))

    iterations = sorted((t, w.split()[1]) for t, w in events if w.startswith("iteration"))  # (time, "task<k>")
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for t, task in iterations:
        first.setdefault(task, t)
        last[task] = t
    training = sum(last[task] - first[task] for task in first)
    out = {
        "python and imports": at("imported"),
        "data": spent("build_stream"),
        "MLflow store": spent("configure_tracking") + spent("ensure_experiment") + spent("chain_tasks"),
        "Ray start": spent("_plan"),
        "chain run, gate, trainer": at("> start") - at("< _plan"),
        "worker group start": iterations[0][0] - at("< start"),
        "training loops": training,
        "driver per task": spent("_register_task"),
        "worker group shutdown": spent("join"),
        "Ray shutdown, exit": (end - start) - at("returned"),
    }
    out["hand-offs"] = (end - start) - sum(out.values())
    out["wall"] = end - start
    return out


def run(data_root: str, iterations: int, overrides: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        stamps = f"{workdir}/stamps.txt"
        args = [sys.executable, __file__, "--child", stamps, "--data-root", str(Path(data_root).resolve()), "--workdir", workdir,
                "--json", f"{workdir}/result.json"]
        for item in [f"solver.iterations={iterations}", f"generator.iterations={iterations}", *overrides]:
            args += ["--set", item]
        from children import checkout_env  # here: the workers import this module as benchmarks.pipeline_timeline

        env = checkout_env()
        start = time.time()
        done = subprocess.run(args, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.time()
        if done.returncode:
            raise SystemExit(f"the main job failed with status {done.returncode}:\n{done.stderr[-3000:]}")
        result = json.loads(Path(f"{workdir}/result.json").read_text())
        timeline = phases(Path(stamps).read_text().splitlines(), start, end)
    timeline["average_accuracy"] = result["average_accuracy"]
    return timeline


def table(runs: list[dict[str, Any]]) -> str:
    rows = [f"| phase | s, mean +- SEM (n={len(runs)}) |", "|---|---|"]
    for phase in [*PHASES, "wall"]:
        values = [r[phase] for r in runs]
        sem = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        rows.append(f"| {phase} | {statistics.mean(values):.1f} +- {sem:.1f} |")
    return "\n".join(rows)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("DGR_DATA_ROOT", "data"))
    p.add_argument("--iterations", type=int, default=1, help="solver and generator iterations per task")
    p.add_argument("--rounds", type=int, default=3, help="runs, one after the other")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    p.add_argument("--json", type=Path, help="write every run's phases here")
    args = p.parse_args()
    runs = []
    for round_ in range(1, args.rounds + 1):
        timeline = {"round": round_, **run(args.data_root, args.iterations, args.set)}
        runs.append(timeline)
        print(f"run {round_}: wall {timeline['wall']:.1f} s, " + ", ".join(f"{k} {timeline[k]:.1f}" for k in PHASES),
              flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(runs, indent=1))
    print(f"\nmain job, split MNIST, {args.iterations} iteration(s) per task, {os.cpu_count()} CPUs, "
          f"{args.rounds} runs\n")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
