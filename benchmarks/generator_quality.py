"""How many training steps before a generator's samples are digits of its task? Per learning rate.

Trains one generator kind (`--kind`, default the convolutional WGAN-GP) on split MNIST's first task
alone with dgr's own generator trainer, once per learning rate in `--lrs`, and at each step count in
`--at` samples `--samples` images as replay does (a frozen copy, eval mode) and asks a judge, a 2x400
MLP trained on all ten MNIST classes, which digit each one is. It prints, per learning rate and step
count, the share of samples the judge puts in the task's classes and the seconds spent so far. A
generator whose samples the judge does not recognise cannot keep a task in class-incremental replay.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dgr.config import from_flat
from dgr.datasets import load_mnist, resolve_data_root
from dgr.scholar import new_scholar
from dgr.solvers import MLPSolver
from dgr.steps import Batch, adam, generator_trainer
from dgr.streams import build_stream
from dgr.targets import Targets


def train_judge(root: Path, iterations: int, seed: int) -> tuple[MLPSolver, float]:
    """A 10-class MLP on MNIST's training images; its accuracy on the test images."""
    torch.manual_seed(seed)
    x, y = load_mnist(root, "train")
    judge = MLPSolver((1, 28, 28), 10)
    optimizer = adam(judge, 1e-3)
    for _ in range(iterations):
        rows = torch.randint(len(x), (128,))
        loss = F.cross_entropy(judge(x[rows].float() / 255), y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    judge.eval()
    test_x, test_y = load_mnist(root, "test")
    with torch.no_grad():
        accuracy = (judge(test_x.float() / 255).argmax(1) == test_y).float().mean().item()
    return judge, accuracy


def recognised(judge: MLPSolver, samples: torch.Tensor, classes: tuple[int, ...]) -> float:
    with torch.no_grad():
        predicted = judge(samples).argmax(1)
    return torch.isin(predicted, torch.tensor(classes)).float().mean().item()


def curve(flat: dict, task, judge: MLPSolver, at: list[int], samples: int, seed: int) -> list[tuple[int, float, float]]:
    """(steps, share recognised, seconds of training so far) at each count in `at`."""
    config = from_flat({**flat, "generator.iterations": max(at), "run.seed": seed})
    scholar = new_scholar(config, task.input_shape, 10)
    rng = torch.Generator().manual_seed(seed)
    trainer = generator_trainer(scholar.generator, config, lambda module: module, rng)
    x = task.train_x.float() / 255
    batch = config.solver.batch_size

    def draw() -> torch.Tensor:
        return x[torch.randint(len(x), (batch,), generator=rng)]

    targets = Targets(None, torch.zeros(batch, 2, dtype=torch.long), hard=torch.zeros(batch, dtype=torch.long))
    points, seconds = [], 0.0
    for step in range(1, max(at) + 1):
        start = time.perf_counter()
        trainer.step(Batch(draw(), batch, targets), 1.0, lambda: (draw(), None))
        seconds += time.perf_counter() - start
        if step in at:
            frozen = scholar.frozen_copy()
            share = recognised(judge, frozen.sample(samples, torch.Generator().manual_seed(seed)), task.classes)
            points.append((step, share, seconds))
            print(f"lr {config.generator.learning_rate:g}, {step} steps: {100 * share:.1f} % recognised, "
                  f"{seconds:.0f} s", flush=True)
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None, help="datasets root (default $DGR_DATA_ROOT or ./data)")
    p.add_argument("--kind", default="conv-wgan-gp", help="generator.kind")
    p.add_argument("--channels", type=int, default=16, help="generator.channels (convolutional kinds)")
    p.add_argument("--lrs", default="1e-4,5e-4", help="comma list of generator.lr")
    p.add_argument("--at", default="100,300,500,1000", help="comma list of step counts to judge at")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--judge-iterations", type=int, default=1500)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = resolve_data_root(args.data_root)
    at = sorted(int(n) for n in args.at.split(","))
    flat = {"stream.name": "split_mnist", "generator.kind": args.kind, "generator.channels": args.channels}
    task = build_stream(from_flat(flat).stream, root, args.seed)[0]
    judge, accuracy = train_judge(root, args.judge_iterations, args.seed)
    print(f"judge: 2x400 MLP, {100 * accuracy:.2f} % on the MNIST test images; task 1 classes {task.classes}")
    curves = {lr: curve({**flat, "generator.lr": float(lr)}, task, judge, at, args.samples, args.seed)
              for lr in args.lrs.split(",")}
    print()
    print(f"| {args.kind} lr | " + " | ".join(f"{n} steps: recognised %, s" for n in at) + " |")
    print("|---|" + "---|" * len(at))
    for lr, points in curves.items():
        print(f"| {lr} | " + " | ".join(f"{100 * share:.1f}, {s:.0f}" for _, share, s in points) + " |")


if __name__ == "__main__":
    main()
