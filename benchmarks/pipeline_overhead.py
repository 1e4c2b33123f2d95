"""Per-task overhead of the pipeline (Ray Train + MLflow registry) against the core's single-process runner.

Both learn the same split-MNIST chain with the same config; the pipeline runs as users run it (a fresh
process: local Ray, embedded SQLite MLflow, one worker with the same threads as the core). Overhead per
task = (pipeline wall - core wall) / tasks, which includes the one-off start-up (local Ray, Ray Train's
worker group, the MLflow store) spread over the tasks; "driver s/task" is the per-task work of the
driver alone (evaluate, figures, log the task run, register the version); the ratio is pipeline / core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dgr.config import parse_override  # noqa: E402
from dgr.datasets import resolve_data_root  # noqa: E402
from pipelines.settings import load_settings  # noqa: E402


def core_wall(overrides: list[str], data_root: Path) -> tuple[float, float]:
    """Wall seconds of the core runner (stream loading included, as in the pipeline) and its accuracy."""
    import torch

    from dgr.sequence import run_sequence
    from dgr.streams import build_stream

    torch.set_num_threads(2)
    config, _ = load_settings(None, overrides)
    start = time.perf_counter()
    result = run_sequence(config, build_stream(config.stream, data_root, config.run.seed))
    return time.perf_counter() - start, result.average_accuracy


def pipeline_wall(overrides: list[str], data_root: Path, workers: int) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as workdir:
        args = [sys.executable, "-m", "pipelines.sequence", "--data-root", str(data_root),
                "--workdir", workdir, "--json", f"{workdir}/result.json"]
        for item in [*overrides, f"pipeline.num_workers={workers}", f"pipeline.threads_per_worker={2 // workers}"]:
            args += ["--set", item]
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        subprocess.run(args, check=True, cwd=workdir, env=env, stdout=subprocess.DEVNULL)  # this checkout's code
        wall = time.perf_counter() - start
        return wall, json.loads(Path(workdir, "result.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--iterations", type=int, default=500, help="solver and generator iterations per task")
    p.add_argument("--workers", default="1,2", help="pipeline worker counts to measure")
    args = p.parse_args()
    data_root = resolve_data_root(args.data_root)
    overrides = [f"solver.iterations={args.iterations}", f"generator.iterations={args.iterations}",
                 "run.device=cpu"]
    for item in overrides:
        parse_override(item)
    core, core_acc = core_wall(overrides, data_root)
    rows = [("core run_sequence (1 process, 2 threads)", core, core_acc, 0.0, 0.0, 1.0)]
    for workers in [int(w) for w in args.workers.split(",")]:
        wall, result = pipeline_wall(overrides, data_root, workers)
        tasks = len(result["versions"])
        rows.append((f"pipeline, {workers} worker(s) x {2 // workers} thread(s)", wall, result["average_accuracy"],
                     (wall - core) / tasks, sum(result["register_seconds"]) / tasks, wall / core))
    print(f"split MNIST, class-IL, GR, {args.iterations} iterations per task, 5 tasks\n")
    print("| runner | wall s | avg. accuracy | overhead s/task (all) | of which driver s/task | wall ratio |")
    print("|---|---|---|---|---|---|")
    for name, wall, acc, per_task, driver, ratio in rows:
        print(f"| {name} | {wall:.1f} | {100 * acc:.2f} % | {per_task:.1f} | {driver:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
