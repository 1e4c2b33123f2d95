"""dgr.steps: what one step of each model touches."""

from __future__ import annotations

import torch

from dgr.scholar import new_scholar
from dgr.steps import Batch, WGANGPTrainer
from dgr.targets import Targets
from dgr.training import precision_context
from tests.conftest import tiny_config

SHAPE = (1, 8, 8)


def test_the_wgan_generator_step_leaves_the_critic_without_gradients() -> None:
    """No critic gradient is computed, so under DDP none is all-reduced for nothing."""
    config = tiny_config(generator={"kind": "wgan-gp"})
    gan = new_scholar(config, SHAPE, 6).generator
    before = {k: v.clone() for k, v in gan.critic.state_dict().items()}
    WGANGPTrainer(gan, config, lambda m: m, torch.Generator()).generator_update(torch.randn(16, 8))
    assert all(p.grad is None for p in gan.critic.parameters())
    assert all(p.grad is not None for p in gan.generator.parameters())
    assert all(torch.equal(before[k], v) for k, v in gan.critic.state_dict().items())


def test_a_batch_without_replay_has_no_replayed_rows() -> None:
    targets = Targets(None, torch.tensor([[0, 2]] * 4), hard=torch.zeros(4, dtype=torch.long))
    assert Batch(torch.rand(4, *SHAPE), 4, targets).replayed is None
    with_replay = Batch(torch.rand(8, *SHAPE), 4, targets, targets)
    assert torch.equal(with_replay.replayed, with_replay.x[4:])


def test_under_bf16_each_critic_step_sees_the_weights_the_last_one_made() -> None:
    """One autocast region spans a WGAN-GP iteration's critic steps and its generator step: the weights
    they read must be the ones the optimiser just wrote, as when each update has an autocast of its own."""
    config = tiny_config(generator={"kind": "wgan-gp", "critic_steps": 3}, run={"precision": "bf16"})
    cpu = torch.device("cpu")
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    batch = Batch(x, 16, Targets(None, torch.tensor([[0, 2]] * 16), hard=torch.zeros(16, dtype=torch.long)))

    def trained(one_region: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        gan = new_scholar(config, SHAPE, 6).generator
        trainer = WGANGPTrainer(gan, config, lambda m: m, torch.Generator().manual_seed(1))
        if one_region:
            with precision_context(config, cpu):
                trainer.step(batch, 1.0, lambda: (x, None))
            return gan.state_dict()
        for name in ("critic_update", "generator_update"):
            def own_region(*args, update=getattr(trainer, name)):
                with precision_context(config, cpu):
                    return update(*args)
            setattr(trainer, name, own_region)
        trainer.step(batch, 1.0, lambda: (x, None))
        return gan.state_dict()

    one, separate = trained(True), trained(False)
    assert all(torch.equal(one[k], separate[k]) for k in one)
