"""The new-domain chain MNIST -> Fashion-MNIST through the main job from Parquet files, against the core
on the built-in IDX sources.

Writes both datasets as Hugging Face-style Parquet files (PNG records, label names in the metadata) into
a temporary folder (never the repository), runs `pipelines.sequence` on
`configs/new_domains_mnist_fashion.yaml` with `stream.sources` pointing at them and one worker, then the
core single-process runner on the same config over the built-in sources. PNG is lossless and one worker
trains as the core does, so both must give the same accuracies; the table says whether they do, and the
registry's versions show one per task.

    .venv/bin/python benchmarks/parquet_chain.py --data-root ../shared/data [--set solver.iterations=500 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "new_domains_mnist_fashion.yaml"
DATASETS = ("mnist", "fashion_mnist")


def write_sources(data_root: str, folder: Path) -> list[str]:
    """Each dataset's train and test split as `<folder>/<name>/<split>.parquet`; the sources' specs."""
    from dgr.datasets import load_dataset
    from dgr.image_files import write_parquet

    for name in DATASETS:
        for split in ("train", "test"):
            images, labels = load_dataset(name, data_root, split)
            write_parquet(folder / name / f"{split}.parquet", images.permute(0, 2, 3, 1).numpy(), labels.numpy())
    return [f"parquet:{folder / name}" for name in DATASETS]


def core(overrides: list[str], data_root: str) -> dict:
    from dgr.sequence import run_sequence
    from dgr.streams import build_stream
    from pipelines.settings import load_settings

    config, _ = load_settings(CONFIG, overrides)
    result = run_sequence(config, build_stream(config.stream, data_root, config.run.seed))
    return {"accuracy_matrix": result.accuracy_matrix, "average_accuracy": result.average_accuracy}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        sources = write_sources(args.data_root, work / "parquet")
        print(f"wrote {', '.join(sources)} in {time.perf_counter() - start:.0f} s", flush=True)
        job = [sys.executable, "-m", "pipelines.sequence", "--config", str(CONFIG), "--data-root", args.data_root,
               "--workdir", str(work / "job"), "--json", str(work / "job.json")]
        for item in [*args.set, f"stream.sources={','.join(sources)}", "pipeline.num_workers=1",
                     "pipeline.name=parquet-mnist-fashion"]:
            job += ["--set", item]
        start = time.perf_counter()
        subprocess.run(job, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        pipeline_wall = time.perf_counter() - start
        piped = json.loads((work / "job.json").read_text())
    start = time.perf_counter()
    direct = core(args.set, args.data_root)
    core_wall = time.perf_counter() - start
    print("| run | sources | MNIST after the chain | Fashion-MNIST after the chain | average | versions | wall |")
    print("|---|---|---|---|---|---|---|")
    for label, result, wall, versions in (("main job, 1 worker", piped, pipeline_wall, ", ".join(piped["versions"])),
                                          ("core", direct, core_wall, "-")):
        last = result["accuracy_matrix"][-1]
        print(f"| {label} | {'Parquet' if label != 'core' else 'IDX (built-in)'} | {100 * last[0]:.2f} % | "
              f"{100 * last[1]:.2f} % | {100 * result['average_accuracy']:.2f} % | {versions} | {wall:.0f} s |")
    same = piped["accuracy_matrix"] == direct["accuracy_matrix"]
    print(f"identical accuracy matrices: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
