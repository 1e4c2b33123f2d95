"""Memorisation audit of the reference protocol's GR generator (`dgr.privacy`), after every task.

Trains split MNIST class-IL with GR and the 2x400 VAE (the default config, see benchmarks/split_mnist.py)
through the core for one seed and, after each task k, scores n samples of the generator against the real
images of tasks 0..k: the nearest-neighbour ratio, the near-copy fraction and its threshold, and the time
the audit took (sampling included). Prints a markdown table and writes it as JSON.

Controls put the figures on a scale: the same scores for real images used as "samples" of tasks 0..4
(training images, unseen test images) and for uniform noise, against the even rows of the test images as
held-out data (`--controls-only` prints them without training).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dgr.config import from_flat, parse_override  # noqa: E402
from dgr.datasets import resolve_data_root  # noqa: E402
from dgr.privacy import REFERENCES, SAMPLES, audit_generator, memorisation  # noqa: E402
from dgr.sequence import TaskEvaluated, run_sequence  # noqa: E402
from dgr.streams import Task, build_stream  # noqa: E402
from dgr.training import Progress  # noqa: E402

BASE = {"stream.name": "split_mnist", "stream.scenario": "class", "replay.arm": "gr", "replay.targets": "hard"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-root", default=None, help="datasets root (default $DGR_DATA_ROOT or ./data)")
    p.add_argument("--samples", type=int, default=SAMPLES, help="generated samples per audit")
    p.add_argument("--references", type=int, default=REFERENCES, help="m: reference images of each kind")
    p.add_argument("--json", default="results/privacy_audit.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--controls-only", action="store_true", help="score the controls, train nothing")
    return p.parse_args()


def controls(tasks: list[Task], samples: int, references: int, seed: int) -> None:
    """Real images and noise as samples of every task; the odd test rows are unseen by both references."""
    g = torch.Generator().manual_seed(seed + 1)  # not the audit's own draw of the reference images
    train, test = torch.cat([t.train_x for t in tasks]), torch.cat([t.test_x for t in tasks])
    held_out, unseen = test[0::2], test[1::2]
    cases = {
        "training images": train[torch.randperm(len(train), generator=g)[:samples]].float() / 255,
        "unseen test images": unseen[torch.randperm(len(unseen), generator=g)[:samples]].float() / 255,
        "uniform noise": torch.rand(samples, *train.shape[1:], generator=g),
    }
    print("| control (tasks 0..4) | samples | m | nn-ratio | copy ratio | near-copy fraction | threshold | audit s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, x in cases.items():
        r = memorisation(x, train, held_out, references, seed=seed)
        print(f"| {name} | {r.samples} | {r.references} | {r.nn_ratio:.3f} | {r.copy_ratio:.3f} | {r.near_copy_fraction:.3f} | "
              f"{r.threshold:.3f} | {r.seconds:.2f} |")
    print()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(int(os.environ.get("DGR_THREADS", os.cpu_count() or 1)))
    flat = {**BASE, "run.seed": args.seed, **dict(parse_override(o) for o in args.set)}
    config = from_flat(flat)
    tasks = build_stream(config.stream, resolve_data_root(args.data_root), config.run.seed)
    controls(tasks, args.samples, args.references, args.seed)
    if args.controls_only:
        return
    rows: list[dict[str, Any]] = []

    def audit(event: Progress | TaskEvaluated) -> None:
        if not isinstance(event, TaskEvaluated) or event.scholar is None:
            return
        score = audit_generator(event.scholar.generator, tasks[:event.task + 1], args.samples, args.references,
                                seed=args.seed)
        rows.append({"task": event.task, "accuracy": sum(event.accuracies) / len(event.accuracies), **asdict(score)})
        print(f"task {event.task}: nn-ratio {score.nn_ratio:.3f}, copy ratio {score.copy_ratio:.3f}, near copies {score.near_copy_fraction:.3f} "
              f"(threshold {score.threshold:.3f}) in {score.seconds:.2f} s", flush=True)

    start = time.perf_counter()
    result = run_sequence(config, tasks, callback=audit)
    print(f"\nsplit MNIST class-IL, GR + VAE, seed {args.seed}: average accuracy "
          f"{100 * result.average_accuracy:.2f} %, {time.perf_counter() - start:.0f} s with the audits\n")
    print("| after task | tasks learned | training images | samples | m | nn-ratio | copy ratio | near-copy fraction | "
          "threshold | audit s | avg. acc. (%) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | 0..{r['task']} | {r['training_images']} | {r['samples']} | {r['references']} | "
              f"{r['nn_ratio']:.3f} | {r['copy_ratio']:.3f} | {r['near_copy_fraction']:.3f} | {r['threshold']:.3f} | {r['seconds']:.2f} | "
              f"{100 * r['accuracy']:.2f} |")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": flat, "average_accuracy": result.average_accuracy, "tasks": rows}, indent=1))


if __name__ == "__main__":
    main()
