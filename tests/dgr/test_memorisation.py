"""The memorisation audit tells a generator that copies training images from one that generalises.

The "generators" here return real images: training images (a perfect memoriser), unseen images of the
same distribution (a perfect generaliser) or uniform noise. The tiny stream's classes are prototypes plus
pixel noise, so two images of a class are never equal.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dgr.privacy import Memorisation, as_pixels, audit_generator, held_out_images, memorisation, nearest_distances
from dgr.sequence import TaskEvaluated, run_sequence
from dgr.streams import Task, hold_out
from dgr.training import Progress
from tests.conftest import make_tiny_stream, tiny_config


class Returns:
    """A "generator" whose samples are given images (uint8 rows drawn with replacement) or uniform noise."""

    def __init__(self, images: torch.Tensor | None, shape: tuple[int, ...] = (1, 8, 8)):
        self.images, self.shape = images, shape

    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        if self.images is None:
            return torch.rand(n, *self.shape, generator=rng)
        rows = torch.randint(len(self.images), (n,), generator=rng)
        return self.images[rows].float() / 255.0


@pytest.fixture
def task_and_unseen() -> tuple[Task, torch.Tensor]:
    """One task of 64 training images and 128 test images; even test rows are its held-out data, odd rows
    are unseen images that no reference holds."""
    task = make_tiny_stream(1, per_class=32, test_per_class=64)[0]
    return dataclasses.replace(task, test_x=task.test_x[0::2], test_y=task.test_y[0::2],
                               valid_x=None, valid_y=None), task.test_x[1::2]


def score(generator: Returns, task: Task) -> Memorisation:
    return audit_generator(generator, [task], samples=200)


def test_a_generator_returning_training_images_scores_as_memorising(task_and_unseen) -> None:
    task, _ = task_and_unseen
    result = score(Returns(task.train_x), task)
    assert result.nn_ratio < 0.05 and result.copy_ratio < 0.05
    assert result.near_copy_fraction == 1.0
    assert result.references == 64 and result.training_images == 64


def test_a_generator_returning_unseen_images_does_not(task_and_unseen) -> None:
    task, unseen = task_and_unseen
    result = score(Returns(unseen), task)
    assert 0.8 < result.nn_ratio < 1.25 and 0.8 < result.copy_ratio < 1.25
    assert result.near_copy_fraction < 0.1


def test_noise_does_not_score_as_memorising(task_and_unseen) -> None:
    task, _ = task_and_unseen
    result = score(Returns(None), task)
    assert 0.8 < result.nn_ratio < 1.25 and result.copy_ratio > 1.25  # noise is further from the data than data
    assert result.near_copy_fraction < 0.05


def test_copies_of_training_images_outside_the_ratio_s_references_show_in_copy_ratio_and_fraction() -> None:
    """With 4x more training than held-out images, the equal-size nn_ratio sees a quarter of the copies."""
    task = make_tiny_stream(1, per_class=128, test_per_class=32)[0]
    result = audit_generator(Returns(task.train_x), [task], samples=400)
    assert result.references == 64 and result.training_images == 256
    assert result.nn_ratio > 0.5  # most copies are of images outside its m = 64 references
    assert result.copy_ratio < 0.05 and result.near_copy_fraction == 1.0


def test_the_threshold_is_the_held_out_images_1st_percentile_distance_to_training(task_and_unseen) -> None:
    task, _ = task_and_unseen
    held = nearest_distances(as_pixels(task.test_x), as_pixels(task.train_x))
    assert score(Returns(None), task).threshold == pytest.approx(float(torch.quantile(held, 0.01)), rel=1e-6)


def test_held_out_images_are_the_validation_data_when_the_stream_holds_some_out() -> None:
    task = make_tiny_stream(1)[0]
    assert held_out_images(task) is task.test_x
    held = hold_out(task, 0.25, seed=0)
    assert held_out_images(held) is held.valid_x


@pytest.mark.parametrize("chunk", [1, 7, 2048])
def test_chunked_nearest_distances_equal_brute_force(chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    queries, refs = torch.rand(23, 64, generator=g), torch.rand(19, 64, generator=g)
    expected = torch.cdist(queries.double(), refs.double()).min(1).values.float()
    assert torch.allclose(nearest_distances(queries, refs, chunk), expected, atol=1e-4)
    assert nearest_distances(refs, refs, chunk).max() < 1e-2  # an exact copy: ~0 (neighbours are ~3 apart)


def test_bad_input_names_what_is_wrong(task_and_unseen) -> None:
    task, _ = task_and_unseen
    with pytest.raises(ValueError, match="quantile"):
        memorisation(task.train_x.float() / 255, task.train_x, task.test_x, quantile=1.5)
    with pytest.raises(ValueError, match="held-out"):
        memorisation(task.train_x.float() / 255, task.train_x, task.test_x[:0])


def test_a_sequence_can_be_audited_after_every_task_through_its_callback() -> None:
    tasks = make_tiny_stream(2)
    scores: list[Memorisation] = []

    def audit(event: Progress | TaskEvaluated) -> None:
        if isinstance(event, TaskEvaluated):
            scores.append(audit_generator(event.scholar.generator, tasks[:event.task + 1], samples=50))

    result = run_sequence(tiny_config(replay={"arm": "gr"}), tasks, callback=audit)
    assert [s.training_images for s in scores] == [96, 192]
    assert all(s.nn_ratio > 0 and 0 <= s.near_copy_fraction <= 1 for s in scores)
    assert result.scholar is not None
