"""Run a grid of (arm, scenario, seed) sequences, one fresh process each, and print a markdown table.

Each run's result is appended to the JSON file as soon as it finishes, so an interrupted benchmark
resumes where it stopped (runs already in the file are not repeated unless --fresh).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue as queues
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgr.config import Config, from_flat  # noqa: E402
from dgr.datasets import resolve_data_root  # noqa: E402

# Benchmark arm name -> config values. "+distill" is GR with soft targets at T = 2.
ARMS: dict[str, dict[str, Any]] = {
    "none": {"replay.arm": "none"},
    "gr": {"replay.arm": "gr", "replay.targets": "hard"},
    "gr-distill": {"replay.arm": "gr", "replay.targets": "soft"},
    "er": {"replay.arm": "er"},
    "joint": {"replay.arm": "joint"},
}


def parser(description: str, arms: str, scenarios: str, seeds: str, json_path: str,
           known: dict[str, dict[str, Any]] = ARMS) -> argparse.ArgumentParser:
    """`arms`: the default --arms; `known`: the arms the script gives `main`, which --help lists (none: the
    script makes its arms from options of its own, and has no --arms)."""
    p = argparse.ArgumentParser(description=description)
    if known:
        p.add_argument("--arms", default=arms, help=f"comma list of {', '.join(known)}")
    p.add_argument("--scenarios", default=scenarios, help="comma list of task, domain, class")
    p.add_argument("--seeds", default=seeds, help="comma list of integers")
    p.add_argument("--data-root", default=None, help="datasets root (default $DGR_DATA_ROOT or ./data)")
    p.add_argument("--json", default=json_path, help="results file (appended run by run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run, e.g. solver.iterations=500")
    p.add_argument("--fresh", action="store_true", help="ignore runs already in the JSON file")
    return p


def _run_one(flat: dict[str, Any], data_root: str, queue: "mp.Queue[dict[str, Any]]") -> None:
    import torch

    from dgr.sequence import run_sequence
    from dgr.streams import build_stream

    torch.set_num_threads(int(os.environ.get("DGR_THREADS", os.cpu_count() or 1)))
    config = from_flat(flat)
    start = time.perf_counter()
    tasks = build_stream(config.stream, data_root, config.run.seed)
    result = run_sequence(config, tasks)
    iterations = sum(t.iterations for t in result.training)
    training_seconds = sum(t.seconds for t in result.training)
    queue.put({
        "accuracy_matrix": result.accuracy_matrix,
        "average_accuracy": result.average_accuracy,
        "forgetting": result.forgetting,
        "backward_transfer": result.backward_transfer,
        "wall_seconds": time.perf_counter() - start,
        "iterations_per_second": iterations / training_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    })


def _result_of(proc: Any, queue: Any) -> dict[str, Any]:
    """The child's result; a child that dies first (a CUDA error, say) stops the grid instead of hanging it."""
    while True:
        exited = not proc.is_alive()  # before the wait: a child flushes its result before it exits
        try:
            result = queue.get(timeout=5)
            break
        except queues.Empty:
            if exited:
                raise SystemExit(f"error: a run's process exited with code {proc.exitcode} before its result "
                                 "(its traceback is above)") from None
    proc.join()
    return result


def run_grid(args: argparse.Namespace, base: dict[str, Any],
             arms: dict[str, dict[str, Any]] = ARMS) -> list[dict[str, Any]]:
    data_root = str(resolve_data_root(args.data_root))
    path = Path(args.json)
    runs: list[dict[str, Any]] = [] if args.fresh or not path.exists() else json.loads(path.read_text())
    overrides = dict(o.split("=", 1) for o in args.set)
    from dgr.config import parse_override

    typed = dict(parse_override(f"{k}={v}") for k, v in overrides.items())
    unknown = [arm for arm in args.arms.split(",") if arm not in arms]
    if unknown:
        raise SystemExit(f"error: --arms: unknown arm {unknown[0]!r} (known: {', '.join(arms)})")
    for arm in args.arms.split(","):
        for scenario in args.scenarios.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                flat = {**base, **arms[arm], "stream.scenario": scenario, "run.seed": seed, **typed}
                key = {"arm": arm, "scenario": scenario, "seed": seed, "config": flat}
                if any({k: r[k] for k in key} == key for r in runs):
                    continue
                from_flat(flat)  # a bad override fails here, before any process starts
                ctx = mp.get_context("spawn")
                queue = ctx.Queue()
                proc = ctx.Process(target=_run_one, args=(flat, data_root, queue))
                proc.start()
                result = _result_of(proc, queue)
                runs.append({**key, **result})
                print(f"{arm:11s} {scenario:6s} seed {seed}: {100 * result['average_accuracy']:.2f} % "
                      f"in {result['wall_seconds']:.0f} s ({result['iterations_per_second']:.1f} it/s, "
                      f"peak {result['peak_rss_mib']:.0f} MiB)", flush=True)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(runs, indent=1))
    return runs


def table(runs: list[dict[str, Any]], arms: list[str], scenarios: list[str]) -> str:
    """Markdown: final average accuracy mean +- SEM over seeds, and mean wall time per run."""
    head = "| arm | " + " | ".join(f"{s}-IL acc. (%) | {s}-IL s/run" for s in scenarios) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(scenarios))]
    for arm in arms:
        cells = []
        for scenario in scenarios:
            chosen = [r for r in runs if r["arm"] == arm and r["scenario"] == scenario]
            if not chosen:
                cells += ["-", "-"]
                continue
            acc = [100 * r["average_accuracy"] for r in chosen]
            sem = statistics.stdev(acc) / math.sqrt(len(acc)) if len(acc) > 1 else float("nan")
            cells.append(f"{statistics.mean(acc):.2f} +- {sem:.2f} (n={len(acc)})")
            cells.append(f"{statistics.mean(r['wall_seconds'] for r in chosen):.0f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| arm | scenario | seed | wall s | it/s | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['arm']} | {r['scenario']} | {r['seed']} | {r['wall_seconds']:.0f} | "
                     f"{r['iterations_per_second']:.1f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def last_row_table(runs: list[dict[str, Any]], arms: list[str], columns: list[str]) -> str:
    """Markdown: each task's accuracy after the whole stream (the matrix's last row), mean over seeds."""
    lines = ["| arm | " + " | ".join(f"{c} (%)" for c in columns) + " | seeds |", "|---|" + "---|" * (len(columns) + 1)]
    for arm in arms:
        chosen = [r for r in runs if r["arm"] == arm]
        if chosen:
            cells = [f"{100 * statistics.mean(r['accuracy_matrix'][-1][j] for r in chosen):.1f}"
                     for j in range(len(columns))]
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {len(chosen)} |")
    return "\n".join(lines)


def main(args: argparse.Namespace, base: dict[str, Any],
         arms: dict[str, dict[str, Any]] = ARMS) -> list[dict[str, Any]]:
    """Run the grid, print its tables; returns the runs of the arms and scenarios asked for.

    `arms`: benchmark arm name -> config values (default: the replay arms, ARMS)."""
    runs = run_grid(args, base, arms)
    names, scenarios = args.arms.split(","), args.scenarios.split(",")
    chosen = [r for r in runs if r["arm"] in names and r["scenario"] in scenarios]
    print()
    print(table(chosen, names, scenarios))
    print()
    print(speed_table(chosen))
    return chosen
