"""dgr.generators, dgr.conv_generators and the WGAN-GP step: the gradient penalty, critic and VAE steps,
convolutional shapes, batch norm under replay, and critic steps that label nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgr.config import ConfigError, GeneratorConfig
from dgr.generators import VAE, WGANGP, build_generator, gradient_penalty
from dgr.scholar import new_scholar
from dgr.sequence import replay_source
from dgr.steps import Batch, VAETrainer, WGANGPTrainer
from dgr.streams import Task
from dgr.targets import LabelledData
from dgr.training import train_task
from tests.conftest import tiny_config

CONV = ["conv-vae", "conv-wgan-gp"]
SHAPES = [(1, 28, 28), (3, 32, 32)]


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("norm", [3.0, 0.25])
def test_gradient_penalty_of_a_linear_critic_is_its_closed_form(norm: float) -> None:
    # f(x) = w.x + b has gradient w everywhere, so the penalty is (||w|| - 1)^2 for any interpolate.
    linear = nn.Linear(12, 1)
    with torch.no_grad():
        linear.weight.mul_(norm / linear.weight.norm())
    critic = nn.Sequential(nn.Flatten(), linear)
    real, fake = torch.rand(6, 3, 2, 2, generator=rng(1)), torch.rand(6, 3, 2, 2, generator=rng(2))
    penalty = gradient_penalty(critic, real, fake, torch.rand(6, 1, 1, 1, generator=rng(3)))
    assert penalty.item() == pytest.approx((norm - 1) ** 2, rel=1e-5)


def gan_trainer(kind: str, shape: tuple[int, ...] = (1, 8, 8)) -> WGANGPTrainer:
    config = tiny_config(generator={"kind": kind, "channels": 4})
    return WGANGPTrainer(new_scholar(config, shape, 6).generator, config, lambda m: m, rng())


@pytest.mark.parametrize("kind", ["wgan-gp", "conv-wgan-gp"])
def test_a_critic_step_lowers_the_critic_loss_on_a_fixed_batch(kind: str) -> None:
    trainer = gan_trainer(kind)
    real, z, alpha = torch.rand(16, 1, 8, 8, generator=rng(1)), torch.randn(16, 8, generator=rng(2)), \
        torch.rand(16, 1, 1, 1, generator=rng(3))
    before = trainer.critic_loss(real, z, alpha).item()
    trainer.critic_update(real, z, alpha)
    assert trainer.critic_loss(real, z, alpha).item() < before


def conv(kind: str, shape: tuple[int, ...]) -> VAE | WGANGP:
    return build_generator(GeneratorConfig(kind=kind, latent=8, channels=4), shape)


@pytest.mark.parametrize("kind", CONV)
@pytest.mark.parametrize("shape", SHAPES)
def test_conv_generators_sample_images_of_the_input_shape_in_the_unit_range(kind: str,
                                                                           shape: tuple[int, ...]) -> None:
    x = conv(kind, shape).eval().sample(5, rng())
    assert x.shape == (5, *shape)
    assert x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_vae_and_critic_take_images_of_the_input_shape(shape: tuple[int, ...]) -> None:
    x = torch.rand(3, *shape, generator=rng())
    logits, mu, logvar = conv("conv-vae", shape)(x, torch.randn(3, 8, generator=rng(1)))
    assert logits.shape == (3, x[0].numel()) and mu.shape == logvar.shape == (3, 8)
    assert conv("conv-wgan-gp", shape).critic(x).shape == (3,)


@pytest.mark.parametrize("kind", CONV)
@pytest.mark.parametrize("shape", [(1, 30, 30), (3, 32, 30), (784,)])
def test_an_input_shape_a_conv_generator_cannot_rebuild_fails_in_one_line(kind: str,
                                                                          shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        conv(kind, shape)
    message = str(info.value)
    assert message.startswith("generator.kind") and kind in message and str(shape) in message
    assert "\n" not in message


@pytest.mark.parametrize("knob", ["channels", "latent"])
def test_conv_capacity_knobs_change_the_size(knob: str) -> None:
    def size(config: GeneratorConfig) -> int:
        return sum(p.numel() for p in build_generator(config, (1, 28, 28)).parameters())

    small = GeneratorConfig(kind="conv-wgan-gp", latent=8, channels=4)
    assert size(GeneratorConfig(**{**small.__dict__, knob: 2 * getattr(small, knob)})) > size(small)


def test_conv_vae_loss_falls_over_a_few_steps_on_a_fixed_batch() -> None:
    config = tiny_config(generator={"kind": "conv-vae", "channels": 4, "lr": 1e-2})
    vae = new_scholar(config, (1, 8, 8), 6).generator
    trainer = VAETrainer(vae, config, lambda m: m, rng())
    x, noise = torch.rand(16, 1, 8, 8, generator=rng(1)), torch.randn(16, 8, generator=rng(2))
    losses = [trainer.update(Batch(x, 16, None), 1.0, noise).item() for _ in range(6)]
    assert losses[-1] < losses[0]


def batch_norm_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


def test_sampling_the_frozen_batch_norm_generator_changes_none_of_its_buffers() -> None:
    previous = new_scholar(tiny_config(generator={"kind": "conv-wgan-gp"}), (1, 8, 8), 6).frozen_copy()
    before = batch_norm_buffers(previous)
    assert before
    previous.sample(32, rng())
    after = batch_norm_buffers(previous)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_new_batch_norm_generator_trains_in_train_mode_next_to_its_frozen_predecessor(
        tiny_stream: list[Task]) -> None:
    config = tiny_config(generator={"kind": "conv-wgan-gp", "iterations": 2, "critic_steps": 2})
    first, second = tiny_stream[:2]
    scholar = new_scholar(config, first.input_shape, 6)
    train_task(scholar, LabelledData.of([first]), first.info, config)
    previous = scholar.frozen_copy()
    frozen, moving = batch_norm_buffers(previous), batch_norm_buffers(scholar)
    replay = replay_source(config, previous, [first.info], second.info, None)
    train_task(scholar, LabelledData.of([second]), second.info, config, replay)
    assert scholar.generator.training and not previous.generator.training
    assert all(torch.equal(frozen[k], v) for k, v in batch_norm_buffers(previous).items())
    assert any(not torch.equal(moving[k], v) for k, v in batch_norm_buffers(scholar).items())


def test_extra_critic_steps_replay_inputs_without_labelling_them(tiny_stream: list[Task]) -> None:
    iterations, critic_steps = 3, 4
    config = tiny_config(solver={"iterations": 0},
                         generator={"kind": "conv-wgan-gp", "iterations": iterations, "critic_steps": critic_steps})
    first, second = tiny_stream[:2]
    scholar = new_scholar(config, first.input_shape, 6)
    previous = scholar.frozen_copy()
    calls = {"label": 0, "sample": 0}
    previous.solver.register_forward_hook(lambda *_: calls.__setitem__("label", calls["label"] + 1))
    previous.generator.generator.register_forward_hook(lambda *_: calls.__setitem__("sample", calls["sample"] + 1))
    replay = replay_source(config, previous, [first.info], second.info, None)
    train_task(scholar, LabelledData.of([second]), second.info, config, replay)
    assert calls == {"label": iterations, "sample": iterations * critic_steps}
