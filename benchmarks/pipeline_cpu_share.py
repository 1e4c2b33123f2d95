"""Who takes the CPU while a chain trains: every process's CPU seconds over a window of training, and the
training process's own threads.

    .venv/bin/python benchmarks/pipeline_cpu_share.py --data-root ../shared/data [--iterations 2000] [--task 1] [--runner main|core]

Runs the main job (`pipelines.sequence`, local Ray, embedded SQLite MLflow; `--runner main`, the default)
or the core runner (`run_sequence` in one process with all the machine's threads; `--runner core`) on the
default config with `--iterations` per task and a progress line every quarter of a task, in a fresh
process. It reads every process's and every thread's CPU time from /proc (Linux) when a quarter of
`--task` is done and again at three quarters, so the window holds nothing but that task's training. It
lets the run finish and prints the window's milliseconds per iteration, the CPU seconds each group of
processes took in it (the training process, which is the Ray Train worker in the main job, Ray Train's
other actors, the chain's gate actor, the driver, Ray's own daemons and idle workers, other processes),
and the training process's CPU seconds and involuntary context switches per thread name (torch's
compute threads, Ray's own threads inside the worker). Run `--runner core` and `--runner main` back to
back to compare the two loops.
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
TRAINING = {"main": "RayTrainWorker", "core": "--core-child"}  # in the training process's command line
Snapshot = tuple[float, dict[str, tuple[float, str]], dict[str, tuple[float, int, str]]]


def _cpu(stat: str) -> float:
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[str, tuple[float, str]]:
    """pid -> (user + system CPU seconds so far, command line) of every process readable now."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            seconds = _cpu(Path(f"/proc/{pid}/stat").read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        found[pid] = (seconds, command.strip())
    return found


def thread_seconds(pid: str) -> dict[str, tuple[float, int, str]]:
    """tid -> (CPU seconds so far, involuntary context switches so far, thread name) of `pid`'s threads."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        folder = Path(f"/proc/{pid}/task/{tid}")
        try:
            seconds = _cpu((folder / "stat").read_text())
            status = dict(line.split(":", 1) for line in (folder / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        found[tid] = (seconds, int(status["nonvoluntary_ctxt_switches"]), status["Name"].strip())
    return found


def group(command: str, runner: str) -> str:
    if TRAINING[runner] in command:
        return "the training process" + (" (Ray Train worker)" if runner == "main" else " (core runner)")
    if any(name in command for name in TRAIN_ACTORS):
        return "Ray Train's other actors"
    if "TaskGate" in command:
        return "the chain's gate actor"
    if "pipelines.sequence" in command:
        return "the driver"
    if any(name in command for name in RAY_DAEMONS):
        return "Ray's daemons and idle workers"
    return "other processes"


def core_child(data_root: str, iterations: int, every: int) -> None:
    """The core runner, printing a line per `every` iterations as the main job's worker does."""
    from dgr.training import Progress
    from pipeline_overhead import core_run

    def line(event: object) -> None:
        if isinstance(event, Progress) and event.iteration % every == 0:
            print(f"task {event.task} iteration {event.iteration}/{event.iterations}", flush=True)
    core_run([f"solver.iterations={iterations}", f"generator.iterations={iterations}"], data_root, line)


def snapshot(runner: str) -> Snapshot:
    processes = cpu_seconds()
    training = [pid for pid, (_, command) in processes.items() if TRAINING[runner] in command]
    return time.time(), processes, thread_seconds(training[0]) if len(training) == 1 else {}


def window(args: argparse.Namespace) -> tuple[Snapshot, Snapshot]:
    """Run the chain; the snapshots at a quarter and three quarters of `args.task`."""
    data_root, quarter = str(Path(args.data_root).resolve()), args.iterations // 4
    marks = [f"task {args.task} iteration {quarter}/", f"task {args.task} iteration {3 * quarter}/"]
    snapshots: list[Snapshot] = []
    with tempfile.TemporaryDirectory() as workdir:
        if args.runner == "main":
            command = ["-m", "pipelines.sequence", "--data-root", data_root, "--workdir", workdir,
                       "--set", f"solver.iterations={args.iterations}", "--set", f"generator.iterations={args.iterations}",
                       "--set", f"pipeline.log_every={quarter}"]
        else:
            command = [__file__, "--core-child", "--data-root", data_root, "--iterations", str(args.iterations)]
        # PYTHONUNBUFFERED: the worker's lines, as Ray prints them in the driver, arrive at once
        job = subprocess.Popen([sys.executable, *command], cwd=workdir, env=checkout_env(PYTHONUNBUFFERED="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert job.stdout is not None
        for line in job.stdout:
            print(line, end="", flush=True)
            if len(snapshots) < 2 and marks[len(snapshots)] in line:
                snapshots.append(snapshot(args.runner))
        if job.wait() != 0:
            sys.exit(f"the {args.runner} run failed (exit {job.returncode})")
    if len(snapshots) < 2:
        sys.exit(f"the run never logged {marks[len(snapshots)]!r}: is --task one of its tasks?")
    return snapshots[0], snapshots[1]


def report(args: argparse.Namespace, first: Snapshot, last: Snapshot) -> None:
    (start, before, threads_before), (end, after, threads_after) = first, last
    seconds, quarter, cores = end - start, args.iterations // 4, os.cpu_count() or 1
    used: dict[str, float] = {}
    for pid, (total, command) in after.items():
        name = group(command, args.runner)
        used[name] = used.get(name, 0.0) + total - before.get(pid, (0.0, ""))[0]
    print(f"\n{args.runner}: {seconds:.1f} s for task {args.task}'s iterations {quarter} to {3 * quarter}, "
          f"{1000 * seconds / (2 * quarter):.1f} ms per iteration ({cores} cores: {cores * seconds:.0f} CPU-s)\n")
    print("| processes | CPU s | share of the machine |\n|---|---|---|")
    for name, value in sorted(used.items(), key=lambda item: -item[1]):
        print(f"| {name} | {value:.1f} | {100 * value / (cores * seconds):.1f} % |")
    if not threads_after:
        return
    by_name: dict[str, list[float]] = {}
    for tid, (total, switches, name) in threads_after.items():
        was = threads_before.get(tid, (0.0, 0, name))
        row = by_name.setdefault(name, [0, 0.0, 0])
        row[0], row[1], row[2] = row[0] + 1, row[1] + total - was[0], row[2] + switches - was[1]
    print("\n| thread name (training process) | threads | CPU s | share of the machine | involuntary switches |")
    print("|---|---|---|---|---|")
    for name, (count, value, switches) in sorted(by_name.items(), key=lambda item: -item[1][1]):
        if value >= 0.05 or switches:
            print(f"| {name} | {count} | {value:.1f} | {100 * value / (cores * seconds):.1f} % | {switches} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--task", type=int, default=1, help="the task whose training is the window (0-4)")
    p.add_argument("--runner", choices=sorted(TRAINING), default="main")
    p.add_argument("--core-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.iterations % 400:
        # the window is a task's second and third quarters, and the core runner reports every 100 iterations
        sys.exit("--iterations: expected a multiple of 400")
    if args.core_child:
        sys.path.insert(0, str(REPO))
        core_child(args.data_root, args.iterations, args.iterations // 4)
        return
    report(args, *window(args))


if __name__ == "__main__":
    main()
