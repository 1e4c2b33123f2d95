"""Permuted MNIST, 5 tasks, domain-incremental: GR vs ER vs None with the reference protocol's models.

Same solver, VAE and budget as split MNIST (2x400 MLP, 2x400 VAE z = 100, 2000 iterations per task).
"""

from harness import main, parser

BASE = {"stream.name": "permuted_mnist", "stream.num_tasks": 5}

if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0], "gr,er,none", "domain", "1", "results/permuted_mnist.json").parse_args()
    main(args, BASE)
