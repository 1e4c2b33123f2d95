"""Does a generator reproduce its training images? Nearest-neighbour evidence for a privacy officer.

For n samples of a generator and the real images of the tasks it has learned (tasks 0..k: after task k a
GR generator replays all of them), three figures, on flat pixels in [0, 1] with Euclidean distance:

- `nn_ratio`: median distance of a sample to its nearest training image, over median distance to its
  nearest held-out image, against the same number m of reference images of each (a nearest-neighbour
  distance shrinks as its reference set grows, so unequal sets would bias the ratio). A ratio of medians,
  not a mean of per-sample ratios: a few collapsed or garbage samples move neither median, and no
  per-sample division by a near-zero held-out distance blows up. About 1: samples are as close to unseen
  images as to training ones; well below 1: the generator reproduces training images.
- `copy_ratio`: median distance of a sample to its nearest training image over the same median for the
  held-out images, both against all training images (one reference set, so no size bias; the data-copying
  comparison of Meehan et al. 2020). It sees copies of any training image, which `nn_ratio` cannot when
  m is a small part of them: about 1 for unseen images of the data's distribution, well below 1 for a
  generator that copies, above 1 for samples further from the data than real images are (blurred, noise).
- `near_copy_fraction`: the fraction of samples whose nearest training image (all of them, not a subset)
  lies closer than `threshold`, the `quantile` (default 1 %) of the held-out images' own nearest-training-
  image distances: a sample counts as a copy when it is closer to a training image than 99 % of real
  unseen images are. Fresh draws from the data's distribution score about `quantile`.

Held-out images are the tasks' validation data when the stream holds some out, else their test data.
Distances are computed in chunks, so memory stays bounded by a few `chunk` x `chunk` and `chunk` x D floats
beyond the images themselves.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from dgr.streams import Task

SAMPLES = 1000  # generated samples per audit
REFERENCES = 1000  # m: reference images of each kind for the ratio, and held-out images for the threshold
QUANTILE = 0.01


@dataclass(frozen=True)
class Memorisation:
    nn_ratio: float  # median nearest-training distance / median nearest-held-out distance, m references each
    copy_ratio: float  # median nearest-training distance of samples / of held-out images, all training images
    near_copy_fraction: float  # samples closer to a training image than `threshold`
    threshold: float  # `quantile` of held-out images' nearest-training-image distances
    samples: int
    references: int  # m
    training_images: int  # all of them: the reference of the near-copy test
    seconds: float  # of the audit: sampling (when a generator is audited) and every distance


def as_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) in 0..255, or floats in [0, 1], as float32 rows (N, D) in [0, 1]."""
    flat = images.reshape(len(images), -1)
    return flat.float().div_(255.0) if flat.dtype == torch.uint8 else flat.float()


def nearest_distances(queries: torch.Tensor, references: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Euclidean distance (Q,) from each query image to its nearest reference image, as `as_pixels` rows.

    |q - r|^2 = |q|^2 + |r|^2 - 2 q.r as one matrix product per (chunk x chunk) block; both sides are
    centred on the references' mean first, which keeps float32 cancellation small for near-equal rows.
    Images become floats one chunk at a time, so uint8 inputs are never copied whole.
    """
    if len(references) == 0:
        raise ValueError("nearest_distances: no reference images")
    centre = sum(as_pixels(references[r0:r0 + chunk]).sum(0) for r0 in range(0, len(references), chunk))
    centre = centre / len(references)  # (D,)
    best = torch.full((len(queries),), float("inf"))
    for q0 in range(0, len(queries), chunk):
        q = as_pixels(queries[q0:q0 + chunk]) - centre
        q_norm = (q * q).sum(1, keepdim=True)  # (c, 1)
        for r0 in range(0, len(references), chunk):
            r = as_pixels(references[r0:r0 + chunk]) - centre
            squared = q_norm + (r * r).sum(1) - 2.0 * q @ r.T  # (c, c')
            best[q0:q0 + chunk] = torch.minimum(best[q0:q0 + chunk], squared.min(1).values)
    return best.clamp_(min=0.0).sqrt_()


def held_out_images(task: Task) -> torch.Tensor:
    """Images of the task the scholar never trained on: its validation data if held out, else its test data."""
    return task.valid_x if task.valid_x is not None else task.test_x


def memorisation(samples: torch.Tensor, train: torch.Tensor, held_out: torch.Tensor,
                 references: int = REFERENCES, quantile: float = QUANTILE, seed: int = 0) -> Memorisation:
    """Score `samples` (N, C, H, W) floats in [0, 1] against real `train` and `held_out` images (uint8)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile: expected a fraction in (0, 1), got {quantile}")
    if len(samples) == 0 or len(train) == 0 or len(held_out) == 0:
        raise ValueError(f"memorisation needs samples, training and held-out images; got {len(samples)}, "
                         f"{len(train)} and {len(held_out)}")
    start = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    m = min(references, len(train), len(held_out))
    train_ref = train[torch.randperm(len(train), generator=g)[:m]]
    held_ref = held_out[torch.randperm(len(held_out), generator=g)[:m]]
    ratio = nearest_distances(samples, train_ref).median() / nearest_distances(samples, held_ref).median()
    held_to_train, to_train = nearest_distances(held_ref, train), nearest_distances(samples, train)
    threshold = torch.quantile(held_to_train, quantile)
    near = (to_train <= threshold).float().mean()
    copy_ratio = to_train.median() / held_to_train.median()
    return Memorisation(float(ratio), float(copy_ratio), float(near), float(threshold), len(samples), m,
                        len(train), time.perf_counter() - start)


def audit_generator(generator: torch.nn.Module, learned: Sequence[Task], samples: int = SAMPLES,
                    references: int = REFERENCES, seed: int = 0) -> Memorisation:
    """Memorisation of `generator` (anything with `sample(n, rng)`) over the tasks it has learned."""
    start = time.perf_counter()
    x = generator.sample(samples, torch.Generator().manual_seed(seed)).cpu()
    train = torch.cat([t.train_x for t in learned])
    held_out = torch.cat([held_out_images(t) for t in learned])
    score = memorisation(x, train, held_out, references, seed=seed)
    return dataclasses.replace(score, seconds=time.perf_counter() - start)
