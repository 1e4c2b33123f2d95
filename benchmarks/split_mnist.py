"""Split MNIST, the reference protocol of van de Ven & Tolias (2019).

2x400 MLP solver, 2x400 VAE (z = 100), Adam lr 1e-3, batch 128, 2000 iterations per task for solver
and generator, r = 1/t, soft targets at T = 2 for gr-distill. Published (class / task / domain-IL, %):
DGR 90.79 / 99.50 / 95.72, DGR+distill 91.79 / 99.61 / 96.83, None 19.90 / 87.19 / 59.21,
Joint 97.94 / 99.66 / 98.42.
"""

from harness import main, parser

BASE = {"stream.name": "split_mnist"}

if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0], "none,gr,gr-distill,er,joint", "class,task,domain", "1,2,3",
                  "results/split_mnist.json").parse_args()
    main(args, BASE)
