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
from tests.userfiles import images_of, png_header, set_hub_metadata, write_folder, write_npz, write_parquet

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


def test_png_of_zero_width(tmp_path: Path, site: Path) -> None:
    (site / "train" / "a" / "9.png").write_bytes(png_header(0, 8))
    message = error(tmp_path, **folder_stream(image_size=8))
    assert str(site / "train" / "a" / "9.png") in message and "unreadable image" in message


def test_image_claiming_more_pixels_than_pil_decodes(tmp_path: Path) -> None:
    image = png_header(20_000, 20_000)  # PIL's DecompressionBombError, raised before any pixel is allocated
    pq.write_table(pa.table({"image": [image], "label": [0]}), tmp_path / "train.parquet")
    write_parquet(tmp_path / "test.parquet", np.array([0]))
    message = error(tmp_path, name="domains", sources=f"parquet:{tmp_path}")
    assert f"{tmp_path / 'train.parquet'} row 0: unreadable image" in message and "exceeds limit" in message


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


@pytest.mark.parametrize("names, fault", [
    ('"cat"', 'must be a list of distinct strings, got "cat"'),
    ("[0, 1]", "must be a list of distinct strings, got [0, 1]"),
    ('["cat", "dog", "cat"]', "must be distinct, 'cat' appears 2 times"),
])
def test_hub_label_names_that_are_not_distinct_strings(tmp_path: Path, names: str, fault: str) -> None:
    metadata = f'{{"info": {{"features": {{"label": {{"names": {names}, "_type": "ClassLabel"}}}}}}}}'
    for split in ("train", "test"):
        write_parquet(tmp_path / "pq" / f"{split}.parquet", np.array([0, 1]))
        set_hub_metadata(tmp_path / "pq" / f"{split}.parquet", metadata)
    message = error(tmp_path, name="split", sources="parquet:pq")
    assert str(tmp_path / "pq" / "train.parquet") in message and "info.features.label.names" in message
    assert fault in message


def test_hub_metadata_that_is_not_json(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_parquet(tmp_path / "pq" / f"{split}.parquet", np.array([0, 1]))
        set_hub_metadata(tmp_path / "pq" / f"{split}.parquet", "{features: label}")
    message = error(tmp_path, name="split", sources="parquet:pq")
    assert f"{tmp_path / 'pq' / 'train.parquet'}: its 'huggingface' schema metadata is not JSON" in message


def test_missing_parquet_split(tmp_path: Path) -> None:
    write_parquet(tmp_path / "pq" / "train.parquet", np.array([0, 1]))
    assert "no test split" in error(tmp_path, name="split", sources="parquet:pq")


def test_labels_out_of_range(tmp_path: Path) -> None:
    write_npz(tmp_path / "n", 3, {"train": 2})
    write_npz(tmp_path / "n", 5, {"test": 1})  # labels 3 and 4 were never trained on
    message = error(tmp_path, name="domains", sources="npz:n")
    assert str(tmp_path / "n" / "test.npz") in message and "0..2" in message


def npz_labels(base: Path, train: list[int], test: list[int]) -> None:
    base.mkdir()
    for split, y in (("train", train), ("test", test)):
        np.savez(base / f"{split}.npz", x=np.zeros((len(y), 4, 4), np.uint8), y=np.array(y))


def test_negative_labels(tmp_path: Path) -> None:
    npz_labels(tmp_path / "n", [-1, 1], [0, 1])
    message = error(tmp_path, name="domains", sources="npz:n")
    assert str(tmp_path / "n" / "train.npz") in message and "label -1 is negative" in message


@pytest.mark.parametrize("test_label", [-1, 10**9])
def test_test_labels_outside_the_training_classes(tmp_path: Path, test_label: int) -> None:
    npz_labels(tmp_path / "n", [0, 1, 1], [0, test_label])
    message = error(tmp_path, name="domains", sources="npz:n")
    low, high = min(0, test_label), max(0, test_label)
    assert str(tmp_path / "n" / "test.npz") in message and f"0..1 (2 classes), found {low}..{high}" in message


def test_more_numbered_classes_than_training_images(tmp_path: Path) -> None:
    # 10 stands for the reported 10**9: the same check, without building a billion names should it regress
    npz_labels(tmp_path / "n", [0, 1, 0, 10], [0, 1])
    message = error(tmp_path, name="domains", sources="npz:n")
    assert str(tmp_path / "n" / "train.npz") in message and "label 10 would make 11 classes for 4" in message
    npz_labels(tmp_path / "k", [3, 0, 1, 2], [0, 3])  # K = 4 classes for 4 images is allowed
    assert build_stream(StreamConfig(name="domains", sources="npz:k"), tmp_path, seed=1)[0].classes == (0, 1, 2, 3)


@pytest.mark.parametrize("label, fault", [(10, "label 10 would make 11 classes for 4"), (-3, "label -3 is negative")])
def test_parquet_labels_that_number_no_class(tmp_path: Path, label: int, fault: str) -> None:
    base = tmp_path / "pq"
    write_parquet(base / "train" / "part-0.parquet", np.array([0, 1]))
    write_parquet(base / "train" / "part-1.parquet", np.array([0, 1]))
    write_parquet(base / "test.parquet", np.array([0, 1]))
    path = base / "train" / "part-1.parquet"
    pq.write_table(pq.read_table(path).set_column(1, "label", pa.array([0, label], pa.int64())), path)
    message = error(tmp_path, name="split", sources="parquet:pq")
    assert str(path) in message and fault in message  # the shard that holds the label


@pytest.mark.parametrize("kind", ["npz", "parquet"])
@pytest.mark.parametrize("class_names", ["", "a,b"])
def test_unsigned_labels_beyond_int64_are_named_not_wrapped(tmp_path: Path, kind: str, class_names: str) -> None:
    huge = 2**64 - 1  # cast to int64 it wraps to -1, which was reported as a negative label (or crashed)
    base = tmp_path / "s"
    base.mkdir()
    for split in ("train", "test"):
        y = np.array([0, 1, huge], np.uint64)
        if kind == "npz":
            np.savez(base / f"{split}.npz", x=np.zeros((3, 4, 4), np.uint8), y=y)
        else:
            write_parquet(base / f"{split}.parquet", np.array([0, 1, 1]))
            path = base / f"{split}.parquet"
            pq.write_table(pq.read_table(path).set_column(1, "label", pa.array(y, pa.uint64())), path)
    message = error(tmp_path, name="domains", sources=f"{kind}:s", class_names=class_names)
    assert str(base / f"train.{kind}") in message and str(huge) in message
    assert "label -1" not in message and "found -1" not in message


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
    ({"x": np.zeros((2, 0, 4), np.uint8), "y": np.array([0, 1])}, "with H, W >= 1, got uint8 (2, 0, 4)"),
    ({"x": np.zeros((2, 4, 0, 3), np.uint8), "y": np.array([0, 1])}, "with H, W >= 1, got uint8 (2, 4, 0, 3)"),
])
def test_npz_with_wrong_arrays(tmp_path: Path, arrays: dict[str, np.ndarray], fault: str) -> None:
    (tmp_path / "n").mkdir()
    np.savez(tmp_path / "n" / "train.npz", **arrays)
    message = error(tmp_path, name="domains", sources="npz:n")
    assert str(tmp_path / "n" / "train.npz") in message and fault in message


def test_npz_of_empty_images_with_a_resize_rule(tmp_path: Path) -> None:
    (tmp_path / "n").mkdir()
    for split in ("train", "test"):
        np.savez(tmp_path / "n" / f"{split}.npz", x=np.zeros((4, 0, 8), np.uint8), y=np.array([0, 1, 0, 1]))
    message = error(tmp_path, name="domains", sources="npz:n", image_size=8)
    assert str(tmp_path / "n" / "train.npz") in message and "(N, H, W)" in message and "H, W >= 1" in message


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
