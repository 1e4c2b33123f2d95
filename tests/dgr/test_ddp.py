"""DDP equivalence: one step on 2 gloo ranks of 64 samples each equals one process on the 128 samples.

Checked for the solver (new rows mixed with replayed rows at r = 0.5, hard and soft class-IL targets),
the VAE, the WGAN-GP critic (with its gradient penalty through the bare critic) and the WGAN-GP
generator, fully connected and convolutional. The convolutional WGAN-GP's generator has batch norm,
whose batch statistics on a 64-row shard differ from those of the 128 rows: the equivalence is checked
with it in eval mode (per-sample, like the frozen one), and in train mode the ranks must agree with each
other after the step (DDP all-reduces the gradients; each rank normalises with its own shard's
statistics, which is all a generator needs: SyncBatchNorm would only make a small shard's estimate less
noisy, at one all-reduce per layer). Gradients are compared as well as the parameters after the Adam step: Adam's first step is
nearly sign(gradient) * lr, blind to a gradient scaled by the world size, the gradients are not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dgr.replay import GenerativeReplay, TargetKind
from dgr.scenario import Scenario
from dgr.scholar import Scholar, new_scholar
from dgr.steps import Batch, VAETrainer, WGANGPTrainer, adam, solver_step
from dgr.streams import TaskInfo
from dgr.targets import Labeller, Targets
from tests.conftest import tiny_config

SHAPE, OUTPUTS, ROWS, RATIO = (1, 8, 8), 6, 128, 0.5
PAST = [TaskInfo(0, "a", (0, 1)), TaskInfo(1, "b", (2, 3))]
LATEST = TaskInfo(2, "c", (4, 5))
Step = Callable[[Scholar, Callable[[nn.Module], nn.Module], slice, dict[str, Any]], nn.Module]


def global_batch(device: torch.device) -> dict[str, Any]:
    """The 128 new and 128 replayed rows, their targets and every noise tensor a step uses."""
    g = torch.Generator().manual_seed(7)
    new, replayed = torch.rand(ROWS, *SHAPE, generator=g), torch.rand(ROWS, *SHAPE, generator=g)
    y = torch.randint(4, 6, (ROWS,), generator=g)
    tensors = {"new": new, "replayed": replayed, "y": y, "noise": torch.randn(2 * ROWS, 8, generator=g),
               "z": torch.randn(ROWS, 8, generator=g), "alpha": torch.rand(ROWS, 1, 1, 1, generator=g)}
    tensors = {k: v.to(device) for k, v in tensors.items()}
    previous = new_scholar(tiny_config(), SHAPE, OUTPUTS).to(device).frozen_copy()
    new_targets = Labeller.build(Scenario.CLASS, [LATEST], LATEST, device).targets(
        tensors["y"], torch.zeros(ROWS, dtype=torch.long, device=device))
    logits = previous.label(tensors["replayed"])
    replay = {kind: GenerativeReplay(previous, Scenario.CLASS, PAST, LATEST, kind).targets(logits)
              for kind in TargetKind}
    return {**tensors, "targets": new_targets, "replay": replay}


def rows(targets: Targets, part: slice) -> Targets:
    assert targets.rows is None  # one target per sample: a shard of samples is a shard of targets
    pick = lambda t: None if t is None else t[part]  # noqa: E731
    return Targets(None, targets.heads[part], pick(targets.hard), pick(targets.soft))


def batch(data: dict[str, Any], part: slice, kind: TargetKind = TargetKind.HARD) -> Batch:
    x = torch.cat([data["new"][part], data["replayed"][part]])
    return Batch(x, len(x) // 2, rows(data["targets"], part), rows(data["replay"][kind], part))


def solver_hard(scholar: Scholar, wrap: Any, part: slice, data: dict[str, Any]) -> nn.Module:
    solver_step(wrap(scholar.solver), adam(scholar.solver, 1e-3), batch(data, part), RATIO, 2.0)
    return scholar.solver


def solver_soft(scholar: Scholar, wrap: Any, part: slice, data: dict[str, Any]) -> nn.Module:
    solver_step(wrap(scholar.solver), adam(scholar.solver, 1e-3), batch(data, part, TargetKind.SOFT), RATIO, 2.0)
    return scholar.solver


def vae(scholar: Scholar, wrap: Any, part: slice, data: dict[str, Any]) -> nn.Module:
    b = batch(data, part)
    noise = torch.cat([data["noise"][:ROWS][part], data["noise"][ROWS:][part]])  # new rows, then replayed
    VAETrainer(scholar.generator, tiny_config(), wrap, torch.Generator()).update(b, RATIO, noise)
    return scholar.generator


def gan(scholar: Scholar, wrap: Any) -> WGANGPTrainer:
    return WGANGPTrainer(scholar.generator, tiny_config(generator={"kind": "wgan-gp"}), wrap, torch.Generator())


def critic(scholar: Scholar, wrap: Any, part: slice, data: dict[str, Any]) -> nn.Module:
    scholar.generator.generator.eval()  # batch norm (conv) normalises each fake alone: shards match
    gan(scholar, wrap).critic_update(data["new"][part], data["z"][part], data["alpha"][part])
    return scholar.generator.critic


def generator(scholar: Scholar, wrap: Any, part: slice, data: dict[str, Any]) -> nn.Module:
    scholar.generator.generator.eval()
    return generator_in_train_mode(scholar, wrap, part, data)


def generator_in_train_mode(scholar: Scholar, wrap: Any, part: slice, data: dict[str, Any]) -> nn.Module:
    gan(scholar, wrap).generator_update(data["z"][part])
    return scholar.generator.generator


# Step name -> (generator.kind, step). The last one is compared across ranks, not with one process.
STEPS: dict[str, tuple[str, Step]] = {
    "solver-hard": ("vae", solver_hard), "solver-soft": ("vae", solver_soft), "vae": ("vae", vae),
    "wgan-critic": ("wgan-gp", critic), "wgan-generator": ("wgan-gp", generator),
    "conv-vae": ("conv-vae", vae), "conv-wgan-critic": ("conv-wgan-gp", critic),
    "conv-wgan-generator": ("conv-wgan-gp", generator),
}
TRAIN_MODE_BATCH_NORM = ("conv-wgan-gp", generator_in_train_mode)


def after_step(kind: str, step: Step, part: slice, wrap: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """Parameters and gradients of the stepped module, from the same initial weights every time."""
    scholar = new_scholar(tiny_config(generator={"kind": kind, "channels": 4}), SHAPE, OUTPUTS).to(device)
    module = step(scholar, wrap, part, global_batch(device))
    state = {f"{name}": p.detach().cpu().clone() for name, p in module.named_parameters()}
    state.update({f"{name}.grad": p.grad.detach().cpu().clone() for name, p in module.named_parameters()})
    return state


def run_rank(rank: int, world_size: int, backend: str, store: str, out: str) -> None:
    """One DDP rank: every step on this rank's contiguous share of the 128 rows; rank 0 saves them all,
    every rank its batch-norm generator after a train-mode step (to `out`.rank<k>)."""
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        share = ROWS // world_size
        part = slice(rank * share, (rank + 1) * share)
        ids = [device.index] if device.type == "cuda" else None
        wrap = lambda m: DistributedDataParallel(m, device_ids=ids)  # noqa: E731
        states = {name: after_step(*kind_step, part, wrap, device) for name, kind_step in STEPS.items()}
        if rank == 0:
            torch.save(states, out)
        torch.save(after_step(*TRAIN_MODE_BATCH_NORM, part, wrap, device), f"{out}.rank{rank}")
    finally:
        dist.destroy_process_group()


def assert_equivalent(ddp: dict[str, dict[str, torch.Tensor]], device: torch.device) -> None:
    for name, kind_step in STEPS.items():
        single = after_step(*kind_step, slice(0, ROWS), lambda m: m, device)
        assert ddp[name].keys() == single.keys()
        for key in [k for k in single if k.endswith(".grad")]:
            assert torch.allclose(ddp[name][key], single[key], rtol=1e-4, atol=1e-6), f"{name}: {key} differs"
            # Adam's first step is about lr * g / |g|: where |g| is at rounding level (a bias whose
            # gradient cancels out) the two runs may step either way, so only clear gradients count.
            clear = single[key].abs() > 1e-5
            param = key.removesuffix(".grad")
            assert torch.allclose(ddp[name][param][clear], single[param][clear], rtol=1e-4, atol=1e-6), \
                f"{name}: {param} differs"


@pytest.mark.slow
def test_two_gloo_ranks_step_like_one_process_on_their_union(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(run_rank, args=(2, "gloo", str(tmp_path / "store"), str(out)), nprocs=2)
    assert_equivalent(torch.load(out), torch.device("cpu"))
    ranks = [torch.load(f"{out}.rank{rank}") for rank in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0]), "ranks disagree after a DDP step"
    single = after_step(*TRAIN_MODE_BATCH_NORM, slice(0, ROWS), lambda m: m, torch.device("cpu"))
    assert not all(torch.equal(ranks[0][k], single[k]) for k in single)  # the shards' statistics counted


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_an_nccl_rank_on_cuda_steps_like_one_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    run_rank(0, 1, "nccl", str(tmp_path / "store"), str(out))
    assert_equivalent(torch.load(out), torch.device("cuda", 0))
