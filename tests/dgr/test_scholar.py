"""dgr.scholar and dgr.generators: side-effect-free sampling, frozen copies, generator capacity knobs."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pytest
import torch
from torch import nn

from dgr.config import GeneratorConfig
from dgr.generators import VAE, WGANGP, build_generator
from dgr.scholar import Scholar, new_scholar
from tests.conftest import tiny_config

SHAPE = (1, 8, 8)
OUTPUTS = 6
GENERATORS = ["vae", "wgan-gp", "conv-vae", "conv-wgan-gp"]


def make_scholar(kind: str = "vae") -> Scholar:
    return new_scholar(tiny_config(generator={"kind": kind, "channels": 4}), SHAPE, OUTPUTS)


def modes(module: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


def set_modes(scholar: Scholar, mode: str) -> None:
    """'train', 'eval', or 'mixed' (solver training, generator in eval)."""
    scholar.train(mode != "eval")
    if mode == "mixed":
        scholar.generator.eval()


CALLS: dict[str, Callable[[Scholar], list[torch.Tensor]]] = {
    "sample": lambda s: [s.sample(5)],
    "label": lambda s: [s.label(torch.rand(5, *SHAPE))],
    "replay": lambda s: list(s.replay(5)),
}


@pytest.mark.parametrize("kind", GENERATORS)
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
@pytest.mark.parametrize("call", CALLS)
def test_scholar_calls_leave_training_flags_unchanged(kind: str, mode: str, call: str) -> None:
    scholar = make_scholar(kind)
    set_modes(scholar, mode)
    before = modes(scholar)
    CALLS[call](scholar)
    assert modes(scholar) == before


@pytest.mark.parametrize("kind", GENERATORS)
@pytest.mark.parametrize("call", CALLS)
def test_scholar_calls_produce_no_grad(kind: str, call: str) -> None:
    scholar = make_scholar(kind)
    with torch.enable_grad():
        outputs = CALLS[call](scholar)
    assert all(not t.requires_grad and t.grad_fn is None for t in outputs)


@pytest.mark.parametrize("kind", GENERATORS)
def test_sample_has_the_input_shape_and_pixel_range(kind: str) -> None:
    x = make_scholar(kind).sample(7)
    assert x.shape == (7, *SHAPE)
    assert x.min() >= 0 and x.max() <= 1


def test_replay_labels_its_own_samples() -> None:
    scholar = make_scholar()
    x, logits = scholar.replay(4, torch.Generator().manual_seed(0))
    assert logits.shape == (4, OUTPUTS)
    assert torch.equal(logits, scholar.solver(x))


def test_sample_is_reproducible_with_a_generator() -> None:
    scholar = make_scholar()
    assert torch.equal(scholar.sample(3, torch.Generator().manual_seed(5)),
                       scholar.sample(3, torch.Generator().manual_seed(5)))


def test_frozen_copy_is_in_eval_mode_without_grad() -> None:
    frozen = make_scholar().frozen_copy()
    assert not any(modes(frozen).values())
    assert not any(p.requires_grad for p in frozen.parameters())


def test_frozen_copy_leaves_the_original_trainable() -> None:
    scholar = make_scholar()
    scholar.train()
    scholar.frozen_copy()
    assert all(modes(scholar).values())
    assert all(p.requires_grad for p in scholar.parameters())


def test_frozen_copy_shares_no_parameter_storage() -> None:
    scholar = make_scholar()
    frozen = scholar.frozen_copy()
    original = {p.untyped_storage().data_ptr() for p in scholar.state_dict().values()}
    copied = {p.untyped_storage().data_ptr() for p in frozen.state_dict().values()}
    assert original.isdisjoint(copied)
    for (name, a), b in zip(scholar.state_dict().items(), frozen.state_dict().values()):
        assert torch.equal(a, b), name


def test_frozen_copy_does_not_follow_updates_to_the_original() -> None:
    scholar = make_scholar()
    frozen = scholar.frozen_copy()
    with torch.no_grad():
        for p in scholar.parameters():
            p.add_(1.0)
    assert all(not torch.equal(a, b) for a, b in zip(scholar.parameters(), frozen.parameters()))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("kind, cls", [("vae", VAE), ("wgan-gp", WGANGP), ("conv-vae", VAE), ("conv-wgan-gp", WGANGP)])
def test_generator_builds_from_config(kind: str, cls: type) -> None:
    generator = build_generator(GeneratorConfig(kind=kind, latent=8, hidden=32), SHAPE)
    assert isinstance(generator, cls)
    assert generator.sample(3).shape == (3, *SHAPE)


@pytest.mark.parametrize("kind", ["vae", "wgan-gp"])
@pytest.mark.parametrize("knob", ["latent", "hidden", "layers"])
def test_generator_capacity_knobs_change_its_size(kind: str, knob: str) -> None:
    small = GeneratorConfig(kind=kind, latent=8, hidden=32, layers=1)
    large = dataclasses.replace(small, **{knob: 2 * getattr(small, knob)})
    assert parameter_count(build_generator(large, SHAPE)) > parameter_count(build_generator(small, SHAPE))
