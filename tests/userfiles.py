"""Tiny datasets in the formats users bring (PNG folders, Parquet, .npz) for tests of dgr.sources.

Each class is a random prototype plus noise (learnable); pixel (0, 0) of channel 0 holds the label so a
test can read back which class an image came from.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from dgr.image_files import encode_png, write_parquet as write_parquet_file


def images_of(labels: np.ndarray, size: int = 8, channels: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 (N, size, size, channels) with the label in pixel (0, 0) of channel 0; `seed` draws the noise."""
    prototypes = np.random.default_rng(0).integers(0, 256, size=(int(labels.max()) + 1, size, size, channels))
    noise = np.random.default_rng(seed).normal(0, 20, size=(len(labels), size, size, channels))
    noisy = prototypes[labels] + noise
    images = np.clip(noisy, 0, 255).astype(np.uint8)
    images[:, 0, 0, 0] = labels
    return images


def write_folder(base: Path, classes: list[str], per_class: dict[str, int], size: int = 8, channels: int = 1
                 ) -> None:
    """base/<split>/<class>/<i>.png, `per_class[split]` images of each class."""
    for split, count in per_class.items():
        labels = np.repeat(np.arange(len(classes)), count)
        for i, (image, label) in enumerate(zip(images_of(labels, size, channels), labels)):
            folder = base / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.png").write_bytes(encode_png(image))


def write_parquet(path: Path, labels: np.ndarray, size: int = 8, struct: bool = True,
                  label_names: list[str] | None = None) -> None:
    """One Parquet file like the Hub exports: image {bytes, path} (or raw binary) and label, with the
    label names in the schema metadata as `datasets` writes a ClassLabel when `label_names` is given."""
    write_parquet_file(path, images_of(labels, size), labels, label_names or (), struct)


def set_hub_metadata(path: Path, text: str) -> None:
    """Replace the Parquet file's `huggingface` schema metadata (where a Hub export keeps its features) by `text`."""
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(path).replace_schema_metadata({"huggingface": text}), path)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with an empty data stream (nothing is allocated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_npz(base: Path, classes: int, per_class: dict[str, int], size: int = 8, channels: int = 0) -> None:
    """base/<split>.npz with x (N, size, size[, channels]) uint8 and y (N,) int64."""
    base.mkdir(parents=True, exist_ok=True)
    for split, count in per_class.items():
        labels = np.repeat(np.arange(classes), count)
        x = images_of(labels, size, max(channels, 1), seed=len(split))
        np.savez(base / f"{split}.npz", x=x if channels else x[..., 0], y=labels)
