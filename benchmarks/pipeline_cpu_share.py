"""Who takes the CPU while the main job trains: every process's CPU seconds over a window of training.

    .venv/bin/python benchmarks/pipeline_cpu_share.py --data-root ../shared/data [--iterations 2000] [--task 1]

Runs the main job (`pipelines.sequence`, local Ray, embedded SQLite MLflow, default config with
`--iterations` per task, a worker log line every quarter of a task) in a fresh process and reads every
process's CPU time from /proc (Linux) when the worker logs a quarter of `--task` done and again at three
quarters, so the window holds nothing but that task's training. It lets the job finish and prints the CPU
seconds each group of processes took in the window: the Ray Train worker (the training loop), Ray Train's
other actors, the chain's gate actor, the driver, Ray's own daemons (GCS, raylet, dashboard, agents, log
and autoscaler monitors) and idle workers, and any other process of the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from children import checkout_env

REPO = Path(__file__).resolve().parents[1]
TRAIN_ACTORS = ("TrainController", "PlacementGroupCleaner", "AutoscalingCoordinator", "PreemptionWatcher",
                "SynchronizationActor", "DatasetManager")
RAY_DAEMONS = ("gcs_server", "raylet", "dashboard", "DashboardAgent", "RuntimeEnvAgent", "log_monitor",
               "autoscaler", "forkserver", "ray::IDLE")


def cpu_seconds() -> dict[str, tuple[float, str]]:
    """pid -> (user + system CPU seconds so far, command line) of every process readable now."""
    ticks, found = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        found[pid] = ((int(fields[11]) + int(fields[12])) / ticks, command.strip())
    return found


def group(command: str) -> str:
    if "RayTrainWorker" in command:
        return "Ray Train worker (the training loop)"
    if any(name in command for name in TRAIN_ACTORS):
        return "Ray Train's other actors"
    if "TaskGate" in command:
        return "the chain's gate actor"
    if "pipelines.sequence" in command:
        return "the driver"
    if any(name in command for name in RAY_DAEMONS):
        return "Ray's daemons and idle workers"
    return "other processes"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--task", type=int, default=1, help="the task whose training is the window (0-4)")
    args = p.parse_args()
    if args.iterations % 4:
        sys.exit("--iterations: expected a multiple of 4 (the window is a task's second and third quarters)")
    data_root = str(Path(args.data_root).resolve())
    env = checkout_env(PYTHONUNBUFFERED="1")  # the worker's lines, as Ray prints them in the driver, arrive at once
    quarter = args.iterations // 4
    marks = [f"task {args.task} iteration {quarter}/", f"task {args.task} iteration {3 * quarter}/"]
    snapshots: list[tuple[float, dict[str, tuple[float, str]]]] = []
    with tempfile.TemporaryDirectory() as workdir:
        job = subprocess.Popen([sys.executable, "-m", "pipelines.sequence", "--data-root", data_root,
                                "--workdir", workdir, "--set", f"solver.iterations={args.iterations}",
                                "--set", f"generator.iterations={args.iterations}",
                                "--set", f"pipeline.log_every={quarter}"],
                               cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert job.stdout is not None
        for line in job.stdout:  # the worker's log lines reach the driver's output as they are logged
            print(line, end="", flush=True)
            if len(snapshots) < 2 and marks[len(snapshots)] in line:
                snapshots.append((time.time(), cpu_seconds()))
        if job.wait() != 0:
            sys.exit(f"the main job failed (exit {job.returncode})")
    if len(snapshots) < 2:
        sys.exit(f"the job never logged {marks[len(snapshots)]!r}: is --task one of its tasks?")
    (start, before), (end, after) = snapshots
    seconds = end - start
    used: dict[str, float] = {}
    for pid, (total, command) in after.items():
        used[group(command)] = used.get(group(command), 0.0) + total - before.get(pid, (0.0, ""))[0]
    cores = os.cpu_count() or 1
    print(f"\nCPU seconds in {seconds:.1f} s of task {args.task}'s training, iterations {quarter} to {3 * quarter} "
          f"({cores} cores: {cores * seconds:.0f} CPU-s)\n")
    print("| processes | CPU s | share of the machine |\n|---|---|---|")
    for name, value in sorted(used.items(), key=lambda item: -item[1]):
        print(f"| {name} | {value:.1f} | {100 * value / (cores * seconds):.1f} % |")


if __name__ == "__main__":
    main()
