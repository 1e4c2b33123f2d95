"""Split MNIST class-incremental with the WGAN-GP generator (the original paper's): accuracy against
generator steps per task, so a budget can be chosen.

WGAN-GP as Gulrajani et al. (2017): gradient penalty 10, 5 critic steps per generator step, Adam lr 1e-4
(0.5, 0.9) (`generator.lr: auto`), z = 100. Kinds: `conv-wgan-gp` (DCGAN-style, `--channels`) and
`wgan-gp` (fully connected 2x400). One run per kind and budget in `--steps` (generator steps per task;
each run's wall time is its CPU budget, printed); `vae` adds the reference protocol's 2x400 VAE at 2000
iterations for comparison. The solver keeps the reference protocol (2x400 MLP, 2000 iterations, batch
128, r = 1/t) in every run. At CPU budgets (hundreds of steps per task) `--set generator.lr=1e-3` learns
digits far sooner than 1e-4 (`benchmarks/generator_quality.py`).
"""

from typing import Any

from harness import ARMS, last_row_table, main, parser

BASE = {"stream.name": "split_mnist", "replay.arm": "gr"}


def arms(kinds: list[str], steps: list[int], channels: int) -> dict[str, dict[str, Any]]:
    """Arm `KIND@STEPS` for every kind and budget; `vae` is the reference VAE."""
    grid: dict[str, dict[str, Any]] = {"vae": ARMS["gr"]}
    for kind in kinds:
        conv = {"generator.channels": channels} if kind.startswith("conv-") else {}
        grid.update({f"{kind}@{n}": {"generator.kind": kind, "generator.iterations": n, **conv} for n in steps})
    return grid


def budget_table(runs: list[dict[str, Any]], kinds: list[str], steps: list[int]) -> str:
    """Markdown: average accuracy (%) and wall seconds per run, one row per kind, one column per budget."""
    lines = ["| generator | " + " | ".join(f"{n} steps/task: acc. (%), s/run" for n in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for kind in kinds:
        cells = []
        for n in steps:
            chosen = [r for r in runs if r["arm"] == f"{kind}@{n}"]
            acc = sum(100 * r["average_accuracy"] for r in chosen) / max(len(chosen), 1)
            wall = sum(r["wall_seconds"] for r in chosen) / max(len(chosen), 1)
            cells.append(f"{acc:.2f}, {wall:.0f}" if chosen else "-")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0], "", "class", "1", "results/wgan_split_mnist.json", known={})
    p.add_argument("--kinds", default="conv-wgan-gp,wgan-gp", help="comma list of conv-wgan-gp, wgan-gp")
    p.add_argument("--steps", default="250,500,1000", help="comma list of generator steps per task")
    p.add_argument("--channels", type=int, default=32, help="generator.channels of conv-wgan-gp")
    p.add_argument("--vae", action="store_true", help="also run the reference VAE (2000 iterations)")
    args = p.parse_args()
    kinds, steps = args.kinds.split(","), [int(n) for n in args.steps.split(",")]
    grid = arms(kinds, steps, args.channels)
    args.arms = ",".join([f"{k}@{n}" for k in kinds for n in steps] + (["vae"] if args.vae else []))
    runs = main(args, BASE, grid)
    print()
    print(budget_table(runs, kinds, steps))
    print()
    print(last_row_table(runs, args.arms.split(","), [f"task {k + 1}" for k in range(5)]))
