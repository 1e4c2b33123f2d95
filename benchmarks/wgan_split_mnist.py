"""Split MNIST class-incremental with the WGAN-GP generator (the original paper's), at a CPU budget.

WGAN-GP: gradient penalty 10, 5 critic steps per generator step, Adam (0.5, 0.9), lr 1e-4, fully
connected 2x400 generator and critic with z = 100. Budget: 1000 generator steps per task (5000 critic
steps); the solver keeps the reference protocol (2000 iterations, batch 128).
"""

from harness import main, parser

BASE = {
    "stream.name": "split_mnist",
    "generator.kind": "wgan-gp",
    "generator.lr": 1e-4,
    "generator.iterations": 1000,
}

if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0], "gr", "class", "1", "results/wgan_split_mnist.json").parse_args()
    main(args, BASE)
