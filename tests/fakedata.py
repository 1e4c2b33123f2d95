"""Tiny dataset files in the original formats (IDX .gz, SVHN .mat) for tests that read a data root."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, rng: np.random.Generator, train_per_digit: int = 20, test_per_digit: int = 10,
                folder: str = "MNIST") -> None:
    """A random prototype per digit plus noise (learnable); pixel (0, 0) holds the digit for read-back."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    prototypes = rng.integers(0, 256, size=(10, 28, 28))
    for prefix, per_digit in (("train", train_per_digit), ("t10k", test_per_digit)):
        labels = np.repeat(np.arange(10), per_digit)
        noise = rng.normal(0, 40, size=(len(labels), 28, 28))
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        images[:, 0, 0] = labels
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)


def write_svhn(root: Path, rng: np.random.Generator, per_split: int = 30) -> None:
    import scipy.io  # here, not at the top: the GPU check imports this module where only torch is

    (root / "SVHN").mkdir()
    for split in ("train", "test"):
        x = rng.integers(0, 256, size=(32, 32, 3, per_split), dtype=np.uint8)
        y = (np.arange(per_split) % 10 + 1).reshape(-1, 1).astype(np.uint8)  # 1..10, 10 is digit 0
        scipy.io.savemat(str(root / "SVHN" / f"{split}_32x32.mat"), {"X": x, "y": y})
