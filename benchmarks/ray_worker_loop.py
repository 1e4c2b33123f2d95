"""Does the training loop run slower inside a Ray worker than in a plain process? Interleaved rounds.

The same work, the first `--tasks` tasks of split MNIST (GR with the VAE, `--iterations` per task), in
fresh processes, round after round, each round running every mode once:

- `plain`: one process, `--threads` torch threads (as the core runs);
- `beside-ray`: the same in a driver connected to a fresh local Ray that otherwise idles (its GCS,
  raylet, dashboard and agents share the cores);
- `thread`: the same in a plain process, but in a thread other than the main one, as Ray Train 2.60 runs a
  worker's `train_loop_per_worker`;
- `ray-task`: the same in a Ray task holding `--threads` CPUs (a Ray worker process, nice 15 by Ray's
  default), the worker process a Ray Train worker is too;
- `train-worker`: the same as the loop of a one-worker `TorchTrainer` holding `--threads` CPUs: a Ray
  Train worker, with Ray Train's controller and helper actors beside it, as in the main job.

It prints the training loops' seconds per round and mode, each mode's mean, and each mode's difference
to `plain` within a round (mean +- SEM over rounds): on a machine whose speed drifts within minutes, the
paired difference is the figure, not two single runs made minutes apart.
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
import threading
from pathlib import Path

from children import checkout_env

REPO = Path(__file__).resolve().parents[1]
MODES = ("plain", "thread", "beside-ray", "ray-task", "train-worker")


def train_seconds(data_root: str, iterations: int, tasks: int, threads: int) -> float:
    """The training loops' seconds of the stream's first `tasks` tasks (what the core's runner does)."""
    import torch

    from dgr.sequence import run_sequence
    from dgr.streams import build_stream
    from pipelines.settings import load_settings

    torch.set_num_threads(threads)
    config, _ = load_settings(None, [f"solver.iterations={iterations}", f"generator.iterations={iterations}",
                                     "run.device=cpu"])
    result = run_sequence(config, build_stream(config.stream, Path(data_root), config.run.seed)[:tasks])
    return sum(t.seconds for t in result.training)


def train_worker_loop(work: dict) -> None:
    """`train_loop_per_worker` of the `train-worker` mode: the seconds go to the file `out`."""
    out = work.pop("out")
    Path(out).write_text(json.dumps(train_seconds(**work)))


def in_a_thread(work: tuple) -> float:
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(train_seconds(*work)))
    thread.start()
    thread.join()
    return result[0]


def child(mode: str, args: argparse.Namespace) -> float:
    work = (args.data_root, args.iterations, args.tasks, args.threads)
    if mode == "plain":
        return train_seconds(*work)
    if mode == "thread":
        return in_a_thread(work)
    import ray

    ray.init(address="local", num_cpus=args.threads, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        if mode == "beside-ray":
            return train_seconds(*work)
        if mode == "train-worker":
            return train_worker(args)
        return ray.get(ray.remote(num_cpus=args.threads)(train_seconds).remote(*work))
    finally:
        ray.shutdown()


def train_worker(args: argparse.Namespace) -> float:
    import ray.train
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory() as storage:
        work = {"data_root": args.data_root, "iterations": args.iterations, "tasks": args.tasks,
                "threads": args.threads, "out": f"{storage}/seconds.json"}
        trainer = TorchTrainer(train_worker_loop, train_loop_config=work,
                               scaling_config=ray.train.ScalingConfig(num_workers=1,
                                                                      resources_per_worker={"CPU": args.threads}),
                               run_config=ray.train.RunConfig(storage_path=storage))
        trainer.fit()
        return json.loads(Path(work["out"]).read_text())


def table(seconds: dict[str, list[float]]) -> str:
    rounds = len(seconds["plain"])
    lines = ["| round | " + " | ".join(f"{m} s" for m in seconds) + " |", "|---|" + "---|" * len(seconds)]
    for k in range(rounds):
        lines.append(f"| {k + 1} | " + " | ".join(f"{seconds[m][k]:.1f}" for m in seconds) + " |")
    lines.append("| mean | " + " | ".join(f"{statistics.mean(v):.1f}" for v in seconds.values()) + " |")
    diffs = []
    for m, values in seconds.items():
        d = [v - p for v, p in zip(values, seconds["plain"])]
        sem = f" +- {statistics.stdev(d) / math.sqrt(len(d)):.1f}" if len(d) > 1 else ""
        diffs.append("-" if m == "plain" else f"{statistics.mean(d):+.1f}{sem}")
    lines.append("| minus plain, mean +- SEM | " + " | ".join(diffs) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--iterations", type=int, default=300, help="solver and generator iterations per task")
    p.add_argument("--tasks", type=int, default=2, help="split MNIST tasks trained per run")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)} (plain first)")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.data_root = str(Path(args.data_root).resolve())
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    modes = args.modes.split(",")
    if modes[0] != "plain" or not set(modes) <= set(MODES):
        p.error(f"--modes: a comma list of {', '.join(MODES)} starting with plain, got {args.modes}")
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    env = checkout_env()
    for k in range(args.rounds):
        for mode in modes:
            argv = [sys.executable, __file__, "--child", mode, "--data-root", args.data_root,
                    "--iterations", str(args.iterations), "--tasks", str(args.tasks), "--threads", str(args.threads)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
            seconds[mode].append(float(out.strip().splitlines()[-1]))
            print(f"round {k + 1} {mode}: {seconds[mode][-1]:.1f} s", flush=True)
    print()
    print(table(seconds))


if __name__ == "__main__":
    main()
