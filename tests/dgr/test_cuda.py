"""The core on CUDA: short GR (VAE and WGAN-GP) and ER sequences on the tiny stream. Skipped without CUDA."""

from __future__ import annotations

import math

import pytest
import torch

from dgr.sequence import run_sequence
from dgr.streams import Task
from dgr.training import task_rng
from tests.conftest import tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("sections", [
    {"replay": {"arm": "gr"}},
    {"replay": {"arm": "gr", "targets": "soft"}, "run": {"precision": "bf16"}},
    {"replay": {"arm": "gr"}, "generator": {"kind": "wgan-gp", "iterations": 3, "critic_steps": 2}},
    {"replay": {"arm": "er"}, "stream": {"scenario": "task"}},
], ids=["gr-vae", "gr-soft-bf16", "gr-wgan-gp", "er-task"])
def test_a_sequence_trains_on_cuda(tiny_stream: list[Task], sections: dict) -> None:
    run = {"device": "cuda", **sections.get("run", {})}
    config = tiny_config(**{**sections, "run": run})
    result = run_sequence(config, tiny_stream)
    assert result.scholar is not None
    assert all(p.device.type == "cuda" for p in result.scholar.parameters())
    assert len(result.accuracy_matrix) == 3 and 0.0 <= result.average_accuracy <= 1.0
    assert all(math.isfinite(v) for t in result.training for v in t.losses.values())


def test_the_same_seed_repeats_a_cuda_run(tiny_stream: list[Task]) -> None:
    config = tiny_config(run={"device": "cuda"})
    a, b = run_sequence(config, tiny_stream), run_sequence(config, tiny_stream)
    assert [t.losses for t in a.training] == [t.losses for t in b.training]


def test_task_rng_lives_on_cuda_and_differs_per_rank() -> None:
    a, b = (task_rng(1, 0, rank, 0, "cuda") for rank in (0, 1))
    assert a.device.type == "cuda"
    assert not torch.equal(torch.rand(8, generator=a, device="cuda"), torch.rand(8, generator=b, device="cuda"))
