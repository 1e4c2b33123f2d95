"""Memory of a pipeline worker's real data against the number of tasks: the whole stream built up front
(`build_stream`) against one task at a time (`pipelines.worker.TaskFeed`, what workers do).

Each (stream, way) runs in a fresh process that builds the tasks in order, as a worker reaches them, and
prints its resident memory (RSS, from /proc) while it holds each task, as a worker training that task
would (the old design built every task before training the first). Memory, not time: the figures do not depend on what else the machine runs.

    .venv/bin/python benchmarks/worker_memory.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

STREAMS = {  # --set overrides of the default config
    "split_mnist": [],
    "permuted_mnist": ["stream.name=permuted_mnist", "stream.scenario=domain", "stream.num_tasks=10"],
    "mnist -> fashion_mnist": ["stream.name=domains", "stream.sources=mnist,fashion_mnist", "stream.scenario=domain"],
}
WAYS = ("whole stream", "one task at a time")


def _rss_mb() -> float:
    gc.collect()
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(stream: str, way: str, data_root: str) -> list[float]:
    """RSS in MiB while each task is held (the first entry: before any data is read)."""
    import torch  # noqa: F401  (imported before the baseline: its own memory is not the stream's)

    from dgr.streams import build_stream
    from pipelines.settings import load_settings
    from pipelines.worker import TaskFeed

    config, _ = load_settings(None, STREAMS[stream])
    sizes = [_rss_mb()]
    if way == WAYS[0]:
        tasks = build_stream(config.stream, data_root, config.run.seed)
        sizes += [_rss_mb()] * len(tasks)  # every task is held while any task trains
        return sizes
    feed = TaskFeed(config, data_root)
    for k in range(len(feed.infos)):
        task = feed.at(k)
        sizes.append(_rss_mb())
        del task
    return sizes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.data_root)))
        return
    root = Path(__file__).resolve().parents[1]
    print("| stream | worker holds | tasks | RSS before the data (MiB) | while training task 0 | while training the last task | growth |")
    print("|---|---|---|---|---|---|---|")
    for stream in STREAMS:
        for way in WAYS:
            done = subprocess.run([sys.executable, __file__, "--data-root", args.data_root, "--child", stream, way],
                                  capture_output=True, text=True, check=True, cwd=root,
                                  env={**os.environ, "PYTHONPATH": str(root)})
            sizes = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {stream} | {way} | {len(sizes) - 1} | {sizes[0]:.0f} | {sizes[1]:.0f} | {sizes[-1]:.0f} | "
                  f"{sizes[-1] - sizes[1]:+.0f} |", flush=True)


if __name__ == "__main__":
    main()
