"""Permuted MNIST, 5 tasks, domain-incremental: GR with the convolutional WGAN-GP vs the VAE, ER and None.

The seed paper's claim (Shin et al. 2017): generative replay with a WGAN-GP comes close to exact replay.
Arms: `gr-conv-wgan` (conv-wgan-gp, `--channels`, `--steps` generator steps per task, 5 critic steps
each, lr 1e-4 unless `--set generator.lr=...`, Adam (0.5, 0.9), penalty 10), `gr-wgan` (the fully connected 2x400 WGAN-GP, same
budget), `gr-vae` (the reference protocol's 2x400 VAE, 2000 iterations), `er` (exact replay, stores past
data), `none`. The solver keeps the reference protocol everywhere (2x400 MLP, 2000 iterations, batch 128).
The convolutional generators see permuted pixels: their locality prior does not hold on these images.
`--set replay.targets=soft` replays with the previous solver's softened outputs (distillation, T = 2)
instead of its argmax: on this stream it brings the conv WGAN-GP within a point of ER.
"""

from typing import Any

from harness import ARMS, last_row_table, main, parser

BASE = {"stream.name": "permuted_mnist", "stream.num_tasks": 5}


def arms(steps: int, channels: int) -> dict[str, dict[str, Any]]:
    wgan = {"replay.arm": "gr", "generator.iterations": steps}
    return {
        "gr-conv-wgan": {**wgan, "generator.kind": "conv-wgan-gp", "generator.channels": channels},
        "gr-wgan": {**wgan, "generator.kind": "wgan-gp"},
        "gr-vae": ARMS["gr"],
        "er": ARMS["er"],
        "none": ARMS["none"],
    }


if __name__ == "__main__":
    # --help lists the arms' names, which do not depend on --steps and --channels
    p = parser(__doc__.splitlines()[0], "gr-conv-wgan,gr-vae,er,none", "domain", "1", "results/permuted_wgan.json",
               known=arms(steps=0, channels=0))
    p.add_argument("--steps", type=int, default=1000, help="WGAN-GP generator steps per task")
    p.add_argument("--channels", type=int, default=32, help="generator.channels of the conv WGAN-GP")
    args = p.parse_args()
    runs = main(args, BASE, arms(args.steps, args.channels))
    print()
    print(last_row_table(runs, args.arms.split(","), [f"task {k + 1}" for k in range(5)]))
