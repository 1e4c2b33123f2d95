"""New-domain chain: MNIST, then Fashion-MNIST (10 classes each), domain-incremental, GR vs ER vs None.

One solver head of 10 outputs learns the digits, then the clothes with the same output units, from a
stream of built-in sources (`stream.name: domains`, `stream.sources: mnist,fashion_mnist`). Reference
protocol budget: 2x400 MLP solver, 2x400 VAE (z = 100), Adam lr 1e-3, batch 128, 2000 iterations per
task for solver and generator, r = 1/t, soft targets at T = 2 for gr-distill.
"""

import statistics
from typing import Any

from harness import main, parser

BASE = {"stream.name": "domains", "stream.sources": "mnist,fashion_mnist"}
TASKS = ("MNIST", "Fashion-MNIST")


def final_table(runs: list[dict[str, Any]], arms: list[str]) -> str:
    """Accuracy on each domain after the whole chain (the matrix's last row), mean over seeds."""
    lines = ["| arm | " + " | ".join(f"{t} after the chain (%)" for t in TASKS) + " | seeds |",
             "|---|" + "---|" * (len(TASKS) + 1)]
    for arm in arms:
        chosen = [r for r in runs if r["arm"] == arm]
        if chosen:
            cells = [f"{100 * statistics.mean(r['accuracy_matrix'][-1][j] for r in chosen):.2f}"
                     for j in range(len(TASKS))]
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {len(chosen)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0], "none,gr,gr-distill,er", "domain", "1,2,3",
                  "results/new_domains.json").parse_args()
    runs = main(args, BASE)
    print()
    print(final_table(runs, args.arms.split(",")))
