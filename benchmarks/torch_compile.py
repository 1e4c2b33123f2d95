"""Does `torch.compile` pay for the core's training loop on this machine? Interleaved rounds.

    .venv/bin/python benchmarks/torch_compile.py --data-root ../shared/data [--iterations 400] [--rounds 3] [--device cpu]

Each round trains, in a fresh process per mode, split MNIST (class-IL, GR with the VAE, the reference
protocol as `gpu_check.py` sets it, seed 1) for `--iterations` per task on its first two tasks, with the trained solver and VAE either as
they are (`eager`) or wrapped in `torch.compile` (`compiled`, through `train_task`'s `wrap`, the hook DDP
uses). It prints task 1's milliseconds per iteration after its first tenth (compilation and warm-up
excluded), the first tenth's seconds (where compilation lands), and each round's difference
compiled - eager, mean +- SEM over rounds. The core has no compile option; this measures whether one
would pay. It imports only torch and dgr, so it runs on a GPU machine without Ray or MLflow.
"""

from __future__ import annotations

import argparse
import json
import itertools
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from children import checkout_env

REPO = Path(__file__).resolve().parents[1]
MODES = ("eager", "compiled")


def child(mode: str, data_root: str, iterations: int, device: str) -> dict[str, float]:
    import torch

    from dgr.scenario import Scenario, output_size
    from dgr.scholar import new_scholar
    from dgr.sequence import replay_source, training_data
    from dgr.streams import iter_stream, stream_infos
    from dgr.training import Progress, train_task
    from gpu_check import protocol  # the reference protocol; torch and dgr only, as on a GPU machine

    torch.set_num_threads(os.cpu_count() or 1)
    config = protocol(torch.device(device), iterations, seed=1)
    tasks = list(itertools.islice(iter_stream(config.stream, Path(data_root), config.run.seed), 2))  # tasks 0, 1 only
    outputs = output_size(Scenario(config.stream.scenario), stream_infos(config.stream, data_root, config.run.seed))
    wrap = (lambda module: module) if mode == "eager" else torch.compile
    scholar = new_scholar(config, tasks[0].input_shape, outputs).to(device)
    train_task(scholar, training_data(config, None, tasks[0]), tasks[0].info, config, device=device, wrap=wrap)
    replay = replay_source(config, scholar.frozen_copy(), [tasks[0].info], tasks[1].info, None, device)
    tenth, marks = iterations // 10, {}

    def mark(event: Progress) -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        marks[event.iteration] = time.perf_counter()
    start = time.perf_counter()
    result = train_task(scholar, training_data(config, None, tasks[1]), tasks[1].info, config, replay,
                        device=device, wrap=wrap, callback=mark, log_every=tenth)
    return {"warmup_seconds": marks[tenth] - start,
            "ms_per_iteration": 1000 * (marks[iterations] - marks[tenth]) / (iterations - tenth),
            **{f"loss_{k}": v for k, v in result.losses.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--iterations", type=int, default=400, help="solver and generator iterations per task")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.iterations < 20 or args.iterations % 10:
        p.error("--iterations: expected a multiple of 10, at least 20")
    args.data_root = str(Path(args.data_root).resolve())
    if args.child:
        sys.path.insert(0, str(REPO))
        print(json.dumps(child(args.child, args.data_root, args.iterations, args.device)))
        return
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for k in range(args.rounds):
        for mode in MODES:
            argv = [sys.executable, __file__, "--child", mode, "--data-root", args.data_root,
                    "--iterations", str(args.iterations), "--device", args.device]
            done = subprocess.run(argv, capture_output=True, text=True, env=checkout_env())
            if done.returncode != 0:  # e.g. no C compiler for Inductor on a bare image: say why
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"error: round {k + 1}, {mode}: the child exited with code {done.returncode}")
            runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = runs[mode][-1]
            print(f"round {k + 1} {mode}: {r['ms_per_iteration']:.2f} ms per iteration, first tenth "
                  f"{r['warmup_seconds']:.1f} s, losses {r.get('loss_solver', 0):.4f} {r.get('loss_generator', 0):.4f}",
                  flush=True)
    print("\n| round | eager ms/it | compiled ms/it | eager first tenth s | compiled first tenth s |\n|---|---|---|---|---|")
    for k in range(args.rounds):
        e, c = runs["eager"][k], runs["compiled"][k]
        print(f"| {k + 1} | {e['ms_per_iteration']:.2f} | {c['ms_per_iteration']:.2f} | {e['warmup_seconds']:.1f} | "
              f"{c['warmup_seconds']:.1f} |")
    diff = [c["ms_per_iteration"] - e["ms_per_iteration"] for e, c in zip(runs["eager"], runs["compiled"])]
    sem = f" +- {statistics.stdev(diff) / math.sqrt(len(diff)):.2f}" if len(diff) > 1 else ""
    eager = statistics.mean(r["ms_per_iteration"] for r in runs["eager"])
    print(f"\ncompiled - eager: {statistics.mean(diff):+.2f}{sem} ms per iteration "
          f"({100 * statistics.mean(diff) / eager:+.1f} % of eager's {eager:.2f})")


if __name__ == "__main__":
    main()
