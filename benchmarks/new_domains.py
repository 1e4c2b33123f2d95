"""New-domain chain: MNIST, then Fashion-MNIST (10 classes each), domain-incremental, GR vs ER vs None.

One solver head of 10 outputs learns the digits, then the clothes with the same output units, from a
stream of built-in sources (`stream.name: domains`, `stream.sources: mnist,fashion_mnist`). Reference
protocol budget: 2x400 MLP solver, 2x400 VAE (z = 100), Adam lr 1e-3, batch 128, 2000 iterations per
task for solver and generator, r = 1/t, soft targets at T = 2 for gr-distill.
"""

from harness import last_row_table, main, parser

BASE = {"stream.name": "domains", "stream.sources": "mnist,fashion_mnist"}
TASKS = ("MNIST", "Fashion-MNIST")


if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0], "none,gr,gr-distill,er", "domain", "1,2,3",
                  "results/new_domains.json").parse_args()
    runs = main(args, BASE)
    print()
    print(last_row_table(runs, args.arms.split(","), [f"{t} after the chain" for t in TASKS]))
