"""The main job: learn a stream task by task on Ray Train workers, each scholar registered in MLflow.

    dgr-sequence [--config configs/split_mnist.yaml] [--data-root DIR] [--set k=v ...]
    python -m pipelines.sequence ...      (the same)
    ray job submit --address http://HEAD:8265 --working-dir . -- python pipelines/sequence.py --config ...

The command line only; the driver is `pipelines.chain.run_chain`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from dgr.checkpoint import CheckpointError
from dgr.config import ConfigError
from dgr.datasets import DatasetError, resolve_data_root
from pipelines import registry
from pipelines.chain import run_chain
from pipelines.settings import load_settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Learn a stream of tasks with Deep Generative Replay on Ray Train.")
    p.add_argument("--config", type=Path, default=None, help="YAML config (default configs/split_mnist.yaml)")
    p.add_argument("--data-root", default=None, help="datasets root (default $DGR_DATA_ROOT or ./data)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--restart", action="store_true", help="start a new chain instead of resuming")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--workdir", type=Path, default=Path.cwd(), help="embedded MLflow store and Ray run state")
    return p.parse_args(argv)


def print_result(summary: dict[str, Any]) -> None:
    print("accuracy matrix (row: after task i, column: task j)")
    for row in summary["accuracy_matrix"]:
        print("  " + " ".join("   -  " if a is None else f"{a:.4f}" for a in row))
    print(f"average accuracy {summary['average_accuracy']:.4f}  wall {summary['wall_seconds']:.1f} s  "
          f"registered model {summary['registered_model']} versions {', '.join(summary['versions'])}")


def main(argv: Sequence[str] | None = None, **chain_options: Any) -> int:
    """The exit status: 0, 2 for bad input (one `error:` line), 1 when Ray Train gave up. `chain_options`
    go to `run_chain` (tests pass a worker hook there)."""
    args = parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store-creation notes are noise here
    try:
        config, pipeline = load_settings(args.config, args.set)
        result = run_chain(config, pipeline, resolve_data_root(args.data_root), args.workdir, args.restart,
                           **chain_options)
    except (ConfigError, DatasetError, CheckpointError, registry.RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # Ray Train gave up; its own log above has the worker's traceback
        print(f"error: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
        return 1
    summary = result.summary()
    print_result(summary)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
