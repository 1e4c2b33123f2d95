"""GPU check: the reference protocol on one device in fp32 and bf16, and DDP steps, in one table.

On CUDA a third sequence runs in fp32 with TF32 matmuls (`torch.set_float32_matmul_precision("high")`),
which the core leaves off: this row measures whether it would pay.

The protocol is split MNIST, class-IL, generative replay with the VAE: 2x400 MLP solver, 2x400 VAE
(z = 100), Adam lr 1e-3, batch 128, r = 1/t, 2000 iterations per task (the defaults of dgr.config,
as in configs/split_mnist.yaml). The DDP rows run `train_task` on the first task with the solver and
the generator (VAE, then WGAN-GP) wrapped in DistributedDataParallel, world size 1 (NCCL on CUDA, gloo
on the CPU). Imports only torch and dgr: it runs where ray, mlflow and yaml are not installed.

    python benchmarks/gpu_check.py --data-root data                 # on a GPU machine, < 5 minutes
    python benchmarks/gpu_check.py --device cpu --iterations 20 --data-root ../shared/data   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgr.config import Config, from_flat  # noqa: E402
from dgr.datasets import resolve_data_root  # noqa: E402
from dgr.scenario import Scenario, output_size  # noqa: E402
from dgr.scholar import new_scholar  # noqa: E402
from dgr.sequence import run_sequence  # noqa: E402
from dgr.streams import Task, build_stream  # noqa: E402
from dgr.targets import LabelledData  # noqa: E402
from dgr.training import train_task  # noqa: E402


def protocol(device: torch.device, iterations: int, seed: int, **values: Any) -> Config:
    return from_flat({"stream.name": "split_mnist", "stream.scenario": "class", "replay.arm": "gr",
                      "solver.iterations": iterations, "generator.iterations": iterations,
                      "run.device": device.type, "run.seed": seed, **values})


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def sequence_row(tasks: list[Task], device: torch.device, iterations: int, seed: int,
                 precision: str) -> dict[str, Any]:
    """The whole 5-task sequence (training and evaluation after each task)."""
    _reset_peak(device)
    result = run_sequence(protocol(device, iterations, seed, **{"run.precision": precision}), tasks)
    steps = sum(t.iterations for t in result.training)
    tf32 = ", TF32 matmuls" if torch.get_float32_matmul_precision() != "highest" else ""
    return {"run": f"GR sequence {precision}{tf32}", "iterations": steps,
            "it_per_s": steps / sum(t.seconds for t in result.training), "wall_s": result.wall_seconds,
            "average_accuracy": result.average_accuracy, "peak_mib": _peak_mib(device)}


def ddp_row(tasks: list[Task], device: torch.device, seed: int, store: str, kind: str) -> dict[str, Any]:
    """`train_task` (10 iterations) on the first task with the scholar's modules in DDP, world size 1."""
    config = protocol(device, 10, seed, **{"generator.kind": kind})
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    try:
        ids = [device.index] if device.type == "cuda" else None
        wrap = lambda module: DistributedDataParallel(module, device_ids=ids)  # noqa: E731
        outputs = output_size(Scenario.CLASS, [t.info for t in tasks])
        scholar = new_scholar(config, tasks[0].input_shape, outputs).to(device)
        _reset_peak(device)
        start = time.perf_counter()
        training = train_task(scholar, LabelledData.of(tasks[:1]), tasks[0].info, config, device=device, wrap=wrap)
        wall = time.perf_counter() - start
    finally:
        dist.destroy_process_group()
    if not all(math.isfinite(v) for v in training.losses.values()):
        raise SystemExit(f"DDP {kind} ({backend}): a loss is not finite: {training.losses}")
    return {"run": f"DDP {backend} x1, {kind}", "iterations": training.iterations,
            "it_per_s": training.iterations_per_second, "wall_s": wall, "average_accuracy": None,
            "peak_mib": _peak_mib(device)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | iterations | it/s | wall s | average accuracy (%) | peak GPU memory (MiB) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["average_accuracy"] is None else f"{100 * r['average_accuracy']:.2f}"
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {r['run']} | {r['iterations']} | {r['it_per_s']:.1f} | {r['wall_s']:.1f} | {acc} | {peak} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--iterations", type=int, default=2000, help="per task, solver and generator (2000)")
    p.add_argument("--data-root", default=None, help="datasets root (default $DGR_DATA_ROOT or ./data)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available on this machine (try --device cpu)")
    if device.type == "cuda":
        if device.index is None:  # set_device wants an index: `cuda` is the current one
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    stream = protocol(device, args.iterations, args.seed).stream
    tasks = build_stream(stream, resolve_data_root(args.data_root), args.seed)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}, {args.iterations} iterations per task", flush=True)
    rows = []
    for precision in ("fp32", "bf16"):
        rows.append(sequence_row(tasks, device, args.iterations, args.seed, precision))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        rows.append(sequence_row(tasks, device, args.iterations, args.seed, "fp32"))
        torch.set_float32_matmul_precision("highest")
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("vae", "wgan-gp"):
            rows.append(ddp_row(tasks, device, args.seed, str(Path(folder) / f"store-{kind}"), kind))
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__,
                                               "iterations_per_task": args.iterations, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
