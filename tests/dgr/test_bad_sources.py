"""Bad user data fails in `build_stream`, before any training, with one line naming the file and the fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dgr.config import StreamConfig
from dgr.datasets import DatasetError
from dgr.streams import build_stream
from tests.fakedata import write_mnist
from dgr.image_files import encode_png
from tests.userfiles import images_of, write_folder, write_npz, write_parquet

# An image with torch alone (a GPU machine's) still collects the `gpu` tests beside this module.
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def error(tmp_path: Path, **stream: Any) -> str:
    """The one-line DatasetError that building the stream raises."""
    with pytest.raises(DatasetError) as info:
        build_stream(StreamConfig(**stream), tmp_path, seed=1)
    message = str(info.value)
    assert "\n" not in message
    return message


def folder_stream(**stream: Any) -> dict[str, Any]:
    return {"name": "split", "sources": "folder:site", **stream}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write_folder(tmp_path / "site", ["a", "b"], {"train": 2, "test": 1})
    return tmp_path / "site"


def test_missing_source_folder(tmp_path: Path) -> None:
    assert f"{tmp_path / 'nowhere'} not found" in error(tmp_path, name="domains", sources="npz:nowhere")


def test_missing_split_folder(tmp_path: Path, site: Path) -> None:
    for image in (site / "test").rglob("*.png"):
        image.unlink()
    for folder in sorted((site / "test").iterdir()):
        folder.rmdir()
    (site / "test").rmdir()
    assert f"{site / 'test'} not found" in error(tmp_path, **folder_stream())


def test_unreadable_image(tmp_path: Path, site: Path) -> None:
    (site / "train" / "a" / "9.png").write_bytes(b"not an image")
    message = error(tmp_path, **folder_stream())
    assert str(site / "train" / "a" / "9.png") in message and "unreadable image" in message


def test_truncated_image(tmp_path: Path, site: Path) -> None:
    whole = encode_png(images_of(np.array([0]), size=64)[0])
    (site / "train" / "b" / "9.png").write_bytes(whole[: len(whole) // 2])
    assert str(site / "train" / "b" / "9.png") in error(tmp_path, **folder_stream())


def test_class_folder_outside_the_configured_classes(tmp_path: Path, site: Path) -> None:
    (site / "train" / "z").mkdir()
    (site / "train" / "z" / "0.png").write_bytes(encode_png(images_of(np.array([0]))[0]))
    message = error(tmp_path, **folder_stream(class_names="a,b"))
    assert str(site / "train" / "z") in message and "stream.class_names" in message


def test_images_of_mixed_sizes_without_a_resize_rule(tmp_path: Path, site: Path) -> None:
    (site / "train" / "b" / "9.png").write_bytes(encode_png(images_of(np.array([1]), size=12)[0]))
    message = error(tmp_path, **folder_stream())
    assert str(site / "train" / "b" / "9.png") in message and "stream.image_size" in message
    build_stream(StreamConfig(**folder_stream(image_size=8)), tmp_path, seed=1)  # a rule fixes it


def test_parquet_without_the_label_column(tmp_path: Path) -> None:
    write_parquet(tmp_path / "pq" / "train.parquet", np.array([0, 1]))
    pq.write_table(pa.table({"image": [b"x"], "target": [0]}), tmp_path / "pq" / "test.parquet")
    message = error(tmp_path, name="split", sources="parquet:pq")
    assert str(tmp_path / "pq" / "test.parquet") in message and "'label'" in message


def test_parquet_label_of_the_wrong_type(tmp_path: Path) -> None:
    write_parquet(tmp_path / "pq" / "train.parquet", np.array([0, 1]))
    pq.write_table(pa.table({"image": [b"x"], "label": ["cat"]}), tmp_path / "pq" / "test.parquet")
    message = error(tmp_path, name="split", sources="parquet:pq")
    assert str(tmp_path / "pq" / "test.parquet") in message and "must hold integers" in message


def test_parquet_rows_without_a_label(tmp_path: Path) -> None:
    image = encode_png(images_of(np.array([0]))[0])
    pq.write_table(pa.table({"image": [image, image], "label": pa.array([0, None], pa.int64())}),
                   tmp_path / "train.parquet")
    message = error(tmp_path, name="split", sources=f"parquet:{tmp_path}")
    assert str(tmp_path / "train.parquet") in message and "without a label" in message


def test_parquet_image_of_the_wrong_type(tmp_path: Path) -> None:
    pq.write_table(pa.table({"image": [1, 2], "label": [0, 1]}), tmp_path / "train.parquet")
    write_parquet(tmp_path / "test.parquet", np.array([0, 1]))
    message = error(tmp_path, name="split", sources=f"parquet:{tmp_path}")
    assert str(tmp_path / "train.parquet") in message and "column 'image'" in message


def test_truncated_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "pq" / "train.parquet"
    write_parquet(path, np.array([0, 1, 1]))
    write_parquet(tmp_path / "pq" / "test.parquet", np.array([0, 1]))
    path.write_bytes(path.read_bytes()[:-30])
    message = error(tmp_path, name="split", sources="parquet:pq")
    assert str(path) in message and "unreadable Parquet file" in message


def test_parquet_labels_beyond_the_recorded_label_names(tmp_path: Path) -> None:
    write_parquet(tmp_path / "pq" / "train.parquet", np.array([0, 1, 2]), label_names=["a", "b"])
    write_parquet(tmp_path / "pq" / "test.parquet", np.array([0, 1]), label_names=["a", "b"])
    message = error(tmp_path, name="split", sources="parquet:pq")
    assert str(tmp_path / "pq") in message and "0..1 (2 classes), found 0..2" in message


def test_missing_parquet_split(tmp_path: Path) -> None:
    write_parquet(tmp_path / "pq" / "train.parquet", np.array([0, 1]))
    assert "no test split" in error(tmp_path, name="split", sources="parquet:pq")


def test_labels_out_of_range(tmp_path: Path) -> None:
    write_npz(tmp_path / "n", 3, {"train": 2})
    write_npz(tmp_path / "n", 5, {"test": 1})  # labels 3 and 4 were never trained on
    message = error(tmp_path, name="domains", sources="npz:n")
    assert str(tmp_path / "n" / "test.npz") in message and "0..2" in message


def test_negative_labels(tmp_path: Path) -> None:
    (tmp_path / "n").mkdir()
    for split in ("train", "test"):
        np.savez(tmp_path / "n" / f"{split}.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([-1, 1]))
    assert "found -1..1" in error(tmp_path, name="domains", sources="npz:n")


def test_labels_that_are_not_integers(tmp_path: Path) -> None:
    (tmp_path / "n").mkdir()
    np.savez(tmp_path / "n" / "train.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0.0, 1.5]))
    message = error(tmp_path, name="domains", sources="npz:n")
    assert str(tmp_path / "n" / "train.npz") in message and "integers" in message


@pytest.mark.parametrize("arrays, fault", [
    ({"x": np.zeros((2, 4, 4), np.float32), "y": np.array([0, 1])}, "x must be uint8"),
    ({"x": np.zeros((2, 4, 4, 2), np.uint8), "y": np.array([0, 1])}, "x must be uint8"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 1, 1])}, "y must have shape (2,)"),
    ({"images": np.zeros((2, 4, 4), np.uint8)}, "expected arrays x and y"),
])
def test_npz_with_wrong_arrays(tmp_path: Path, arrays: dict[str, np.ndarray], fault: str) -> None:
    (tmp_path / "n").mkdir()
    np.savez(tmp_path / "n" / "train.npz", **arrays)
    message = error(tmp_path, name="domains", sources="npz:n")
    assert str(tmp_path / "n" / "train.npz") in message and fault in message


def test_truncated_npz(tmp_path: Path) -> None:
    write_npz(tmp_path / "n", 2, {"train": 3, "test": 1})
    path = tmp_path / "n" / "train.npz"
    path.write_bytes(path.read_bytes()[:100])
    assert str(path) in error(tmp_path, name="domains", sources="npz:n")


def test_class_split_leaving_a_task_with_one_class(tmp_path: Path) -> None:
    write_npz(tmp_path / "n", 5, {"train": 2, "test": 1})
    message = error(tmp_path, name="split", sources="npz:n", classes_per_task=2)
    assert "npz:n" in message and "5 classes in groups of 2" in message and "classes_per_task" in message


def test_task_whose_classes_have_no_training_images(tmp_path: Path) -> None:
    write_npz(tmp_path / "n", 3, {"train": 2, "test": 1})
    message = error(tmp_path, name="split", sources="npz:n", class_names="a,b,c,d")  # 'd' has no images
    assert "task 1 (n c/d)" in message and "1 class(es)" in message


def test_empty_task(tmp_path: Path) -> None:
    (tmp_path / "n").mkdir()
    np.savez(tmp_path / "n" / "train.npz", x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0, np.int64))
    np.savez(tmp_path / "n" / "test.npz", x=np.zeros((1, 4, 4), np.uint8), y=np.zeros(1, np.int64))
    message = error(tmp_path, name="domains", sources="npz:n")
    assert str(tmp_path / "n" / "train.npz") in message and "no images" in message


def test_domains_of_different_shapes_without_a_rule(tmp_path: Path) -> None:
    write_npz(tmp_path / "small", 2, {"train": 2, "test": 1}, size=8)
    write_npz(tmp_path / "large", 2, {"train": 2, "test": 1}, size=12)
    message = error(tmp_path, name="domains", sources="npz:small,npz:large")
    assert "npz:large" in message and "stream.image_size" in message


def test_padding_to_a_smaller_size(tmp_path: Path) -> None:
    write_npz(tmp_path / "n", 2, {"train": 2, "test": 1}, size=12)
    message = error(tmp_path, name="domains", sources="npz:n", image_size=8, fit="pad")
    assert str(tmp_path / "n" / "train.npz") in message and "stream.fit: resize" in message


def test_too_few_training_samples_name_the_limit(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.random.default_rng(0), 3, 2)
    message = error(tmp_path, name="split_mnist", train_samples=1)
    assert "task 0 (mnist 0/1)" in message and "stream.train_samples is 1" in message
