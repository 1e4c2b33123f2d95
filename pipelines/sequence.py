"""The main job: learn a stream task by task on Ray Train workers, each scholar registered in MLflow.

    dgr-sequence [--config configs/split_mnist.yaml] [--data-root DIR] [--set k=v ...]
    python -m pipelines.sequence ...      (the same)
    ray job submit --address http://HEAD:8265 --working-dir . -- python pipelines/sequence.py --config ...

The command line only; the driver is `pipelines.chain.run_chain`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from dgr.datasets import resolve_data_root
from dgr.evaluation import average_accuracy
from pipelines import cli
from pipelines.chain import run_chain
from pipelines.settings import load_settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = cli.parser("Learn a stream of tasks with Deep Generative Replay on Ray Train.",
                   "YAML config (default configs/split_mnist.yaml)")
    p.add_argument("--restart", action="store_true", help="start a new chain instead of resuming")
    return p.parse_args(argv)


def print_result(summary: dict[str, Any]) -> None:
    print("accuracy matrix (row: after task i, column: task j)")
    for row in summary["accuracy_matrix"]:
        print("  " + " ".join("   -  " if a is None else f"{a:.4f}" for a in row))
    if summary["validation_matrix"]:
        print(f"validation accuracy {average_accuracy(summary['validation_matrix']):.4f} (held-out training data)")
    print(f"average accuracy {summary['average_accuracy']:.4f}  wall {summary['wall_seconds']:.1f} s  "
          f"registered model {summary['registered_model']} versions {', '.join(summary['versions'])}")


def main(argv: Sequence[str] | None = None, **chain_options: Any) -> int:
    """The exit status: 0, 2 for bad input (one `error:` line), 1 when Ray Train gave up, 130 when
    interrupted (Ctrl-C, SIGTERM). `chain_options` go to `run_chain` (tests pass a worker hook there)."""
    args = parse_args(argv)
    try:
        cli.check_outputs(args)
        config, pipeline = load_settings(args.config, args.set)
        cli.note_unread(config)
        with cli.terminate_as_interrupt():
            result = run_chain(config, pipeline, resolve_data_root(args.data_root), args.workdir, args.restart,
                               **chain_options)
    except KeyboardInterrupt:
        return cli.failed(RuntimeError("interrupted; rerun the same command to resume after the last registered "
                                       "task"), 130)
    except cli.BAD_INPUT as exc:
        return cli.failed(exc, 2)
    except RuntimeError as exc:  # Ray Train gave up; its own log above has the worker's traceback
        return cli.failed(exc, 1)
    summary = result.summary()
    print_result(summary)
    if args.json is not None:
        cli.write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
