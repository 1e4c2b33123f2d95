"""dgr.sources and dgr.shapes: image folders, Parquet, .npz and built-in datasets read back exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dgr.datasets import load_dataset
from dgr.shapes import InputShape
from dgr.sources import load_source
from tests.conftest import REPO
from tests.fakedata import write_mnist
from tests.userfiles import images_of, set_hub_metadata, write_folder, write_npz, write_parquet

CLASSES = ["cat", "dog", "owl"]


def marks(x: torch.Tensor) -> list[int]:
    """The label each image was written with (pixel (0, 0) of channel 0)."""
    return x[:, 0, 0, 0].tolist()


def test_image_folder_labels_follow_sorted_class_names(tmp_path: Path) -> None:
    write_folder(tmp_path / "site", ["owl", "cat", "dog"], {"train": 4, "test": 2})
    source = load_source("folder:site", tmp_path, InputShape())
    assert source.title == "site" and source.class_names == ("cat", "dog", "owl")
    x, y = source.train
    assert x.shape == (12, 1, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.int64
    written = ["owl", "cat", "dog"]
    assert [source.class_names[label] for label in y.tolist()] == [written[m] for m in marks(x)]
    assert len(source.test[1]) == 6


def test_image_folder_mapping_from_the_config_and_absolute_path(tmp_path: Path) -> None:
    write_folder(tmp_path / "site", CLASSES, {"train": 2, "test": 1}, channels=3)
    source = load_source(f"folder:{tmp_path / 'site'}", "/nonexistent-root", InputShape(), ("owl", "dog", "cat"))
    x, y = source.train
    assert x.shape == (6, 3, 8, 8)
    assert [2 - label for label in y.tolist()] == marks(x)  # owl (written 2) is label 0 now


@pytest.mark.parametrize("layout", ["files", "folders", "hub-shards"])
@pytest.mark.parametrize("struct", [True, False])
def test_parquet_layouts_and_image_columns(tmp_path: Path, layout: str, struct: bool) -> None:
    base = tmp_path / "pq"
    for split, labels in (("train", np.array([0, 1, 2, 3, 1])), ("test", np.array([3, 2]))):
        if layout == "files":
            write_parquet(base / f"{split}.parquet", labels, struct=struct)
        elif layout == "folders":
            write_parquet(base / split / "part-0.parquet", labels[:1], struct=struct)
            write_parquet(base / split / "part-1.parquet", labels[1:], struct=struct)
        else:
            write_parquet(base / "data" / f"{split}-00000-of-00001.parquet", labels, struct=struct)
    source = load_source("parquet:pq", tmp_path, InputShape())
    assert source.class_names == ("0", "1", "2", "3")
    for (x, y), expected in ((source.train, [0, 1, 2, 3, 1]), (source.test, [3, 2])):
        assert y.tolist() == expected and marks(x) == expected and x.shape[1:] == (1, 8, 8)


def test_parquet_label_names_from_the_hub_metadata(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_parquet(tmp_path / "pq" / f"{split}.parquet", np.array([0, 1, 1]), label_names=["cat", "dog", "owl"])
    source = load_source("parquet:pq", tmp_path, InputShape())
    assert source.class_names == ("cat", "dog", "owl")  # 'owl' has no images, yet it is a class


@pytest.mark.parametrize("metadata", [
    '{"info": {"features": {"label": {"dtype": "int64", "_type": "Value"}}}}',  # a plain integer label
    '{"info": {"features": {"label": "x"}}}',
    '{"info": "x"}',
    '{"features": {"label": {"names": ["a", "b", "c"]}}}',  # not under "info", where the Hub writes features
    '[1, 2]',
])
def test_parquet_metadata_recording_no_label_names_is_ignored(tmp_path: Path, metadata: str) -> None:
    for split in ("train", "test"):
        write_parquet(tmp_path / "pq" / f"{split}.parquet", np.array([0, 1, 1]))
        set_hub_metadata(tmp_path / "pq" / f"{split}.parquet", metadata)
    assert load_source("parquet:pq", tmp_path, InputShape()).class_names == ("0", "1")


@pytest.mark.parametrize("channels", [0, 3])
def test_npz_grey_and_colour(tmp_path: Path, channels: int) -> None:
    write_npz(tmp_path / "n", 3, {"train": 4, "test": 2}, channels=channels)
    source = load_source("npz:n", tmp_path, InputShape())
    x, y = source.train
    assert x.shape == (12, max(channels, 1), 8, 8) and y.tolist() == np.repeat(np.arange(3), 4).tolist()
    assert marks(x) == y.tolist()
    with np.load(tmp_path / "n" / "train.npz") as arrays:
        stored = torch.from_numpy(arrays["x"] if channels else arrays["x"][..., None])
    assert torch.equal(x, stored.permute(0, 3, 1, 2))


def test_built_in_dataset_as_a_source(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.random.default_rng(0), 3, 2)
    source = load_source("mnist", tmp_path, InputShape())
    assert source.title == "mnist" and source.class_names == tuple(str(d) for d in range(10))
    assert all(torch.equal(a, b) for a, b in zip(source.train, load_dataset("mnist", tmp_path, "train")))


def test_pad_centres_with_a_zero_border() -> None:
    images = torch.full((2, 1, 28, 28), 7, dtype=torch.uint8)
    padded = InputShape(32, "pad", 0).apply(images, "test")
    assert padded.shape == (2, 1, 32, 32) and (padded[:, :, 2:30, 2:30] == 7).all()
    assert padded.sum() == 7 * 2 * 28 * 28


def test_resize_keeps_a_constant_image_constant() -> None:
    images = torch.full((1, 3, 8, 8), 200, dtype=torch.uint8)
    resized = InputShape(20, "resize", 0).apply(images, "test")
    assert resized.shape == (1, 3, 20, 20) and (resized == 200).all()


def test_channel_conversion() -> None:
    grey = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    rgb = InputShape(0, "resize", 3).apply(grey, "test")
    assert rgb.shape == (1, 3, 4, 4) and all(torch.equal(rgb[:, c:c + 1], grey) for c in range(3))
    red = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    red[:, 0] = 255
    assert (InputShape(0, "resize", 1).apply(red, "test") == 76).all()  # 0.299 * 255, as PIL's "L"


def test_stack_fits_images_of_mixed_sizes_to_one_shape() -> None:
    labels = np.array([0, 1])
    small, large = images_of(labels, size=6), images_of(labels, size=12, channels=3)
    images = [small[0], large[0], small[1], large[1]]
    stacked = InputShape(8, "resize", 3).stack(images, ["a", "b", "c", "d"], "test")
    assert stacked.shape == (4, 3, 8, 8)
    exact = InputShape(8, "resize", 3).apply(torch.from_numpy(large).permute(0, 3, 1, 2), "test")
    assert torch.equal(stacked[1], exact[0]) and torch.equal(stacked[3], exact[1])


def test_pil_and_pyarrow_are_imported_only_when_those_formats_are_read() -> None:
    code = "import sys, dgr.sequence, dgr.sources; print(sorted(m for m in ('PIL', 'pyarrow') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


def test_arrays_written_as_parquet_read_back_bit_for_bit(tmp_path: Path) -> None:
    from dgr.image_files import read_parquet, write_parquet

    images = images_of(np.arange(6) % 3, size=8, channels=3, seed=1)
    path = write_parquet(tmp_path / "train.parquet", images, np.arange(6) % 3, ("a", "b", "c"))
    decoded, labels, _ = read_parquet([path])
    assert np.array_equal(np.stack(decoded), images) and labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]  # no partial file left
