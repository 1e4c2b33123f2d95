"""Seconds per generator training step of each generator kind, on random 28x28 (or --shape) batches.

A WGAN-GP step is `critic_steps` critic steps (gradient penalty included) and one generator step; a VAE
step is one ELBO step. The kinds run back to back in one process, `--repeats` rounds in turn, so their
ratio is measured under the same load; no replay (task 1). Picks a CPU budget for the accuracy benchmarks.
`--precisions fp32,bf16` times each kind in both (bf16: autocast, as `run.precision: bf16` trains).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgr.config import from_flat  # noqa: E402
from dgr.scholar import new_scholar  # noqa: E402
from dgr.steps import Batch, generator_trainer  # noqa: E402
from dgr.training import precision_context  # noqa: E402
from dgr.targets import Targets  # noqa: E402


def trainer_step(kind: str, channels: int, shape: tuple[int, ...], batch: int, precision: str) -> Callable[[], object]:
    """One generator training step of `kind` on a fixed random batch (fresh random inputs for extra critic
    steps), in `precision` (fp32, or bf16 autocast)."""
    config = from_flat({"generator.kind": kind, "generator.channels": channels, "run.precision": precision})
    generator = new_scholar(config, shape, 10).generator
    trainer = generator_trainer(generator, config, lambda m: m, torch.Generator().manual_seed(0))
    x = torch.rand(batch, *shape)
    targets = Targets(None, torch.zeros(batch, dtype=torch.long), hard=torch.zeros(batch, dtype=torch.long))

    def step() -> object:
        with precision_context(config, x.device):
            return trainer.step(Batch(x, batch, targets), 1.0, lambda: (torch.rand(batch, *shape), None))
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", default="vae,conv-vae,wgan-gp,conv-wgan-gp")
    p.add_argument("--channels", default="32,64", help="comma list; for the conv kinds")
    p.add_argument("--shape", default="1,28,28")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round (after one warm-up step)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(int(n) for n in args.shape.split(","))
    precisions = args.precisions.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        p.error(f"--precisions: a comma list of fp32, bf16, got {args.precisions}")
    variants = [(k, c, pr) for k in args.kinds.split(",") for c in ([int(c) for c in args.channels.split(",")]
                                                                  if k.startswith("conv-") else [0])
                for pr in precisions]
    steps = {v: trainer_step(v[0], v[1] or 64, shape, args.batch, v[2]) for v in variants}
    times: dict[tuple[str, int, str], list[float]] = {v: [] for v in variants}
    for step in steps.values():
        step()  # warm-up
    for _ in range(args.repeats):
        for v, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[v].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times[variants[0]])
    first = f"{variants[0][0]} {variants[0][2]}"
    print(f"| kind | channels | precision | s/step (median of {args.repeats}) | x {first} |\n|---|---|---|---|---|")
    for v in variants:
        t = statistics.median(times[v])
        print(f"| {v[0]} | {v[1] or '-'} | {v[2]} | {t:.3f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
