"""Tests for dgr.datasets: tiny synthetic IDX/.mat files in tmp_path, plus one real-data check."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import dgr.datasets as ds
import dgr.vision
from dgr.datasets import DatasetError

savemat = pytest.importorskip("scipy.io").savemat  # absent where only torch is (a GPU machine)

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------ helpers

def idx_images(images: np.ndarray, magic: int = 2051, n: int | None = None) -> bytes:
    n_hdr = len(images) if n is None else n
    return struct.pack(">IIII", magic, n_hdr, *images.shape[1:]) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray, magic: int = 2049, n: int | None = None) -> bytes:
    n_hdr = len(labels) if n is None else n
    return struct.pack(">II", magic, n_hdr) + labels.astype(np.uint8).tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def make_idx(root: Path, folder: str = "MNIST", split: str = "train", n: int = 7, gz: bool = True,
             images: bytes | None = None, labels: bytes | None = None
             ) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    x = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = RNG.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    raw = root / folder / "raw"
    ip = write(raw / f"{prefix}-images-idx3-ubyte", idx_images(x) if images is None else images, gz)
    lp = write(raw / f"{prefix}-labels-idx1-ubyte", idx_labels(y) if labels is None else labels, gz)
    return x, y, ip, lp


def make_svhn(path: Path, n: int = 5, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    if y is None:
        y = np.array([[10], [1], [2], [9], [10]][:n], dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"X": x, "y": y})
    return x, y


def listing(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mode, p.stat().st_mtime_ns)
                  for p in root.rglob("*"))


def raises(match_path: Path | str, fn, *args) -> str:
    with pytest.raises(DatasetError) as info:
        fn(*args)
    msg = str(info.value)
    assert str(match_path) in msg
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------- data root

def test_default_data_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ds.DATA_ROOT_ENV, raising=False)
    assert ds.default_data_root() == Path("./data")
    monkeypatch.setenv("DGR_DATA_ROOT", str(tmp_path))
    assert ds.default_data_root() == tmp_path
    assert ds.resolve_data_root(None) == tmp_path
    assert ds.resolve_data_root("/elsewhere") == Path("/elsewhere")
    assert ds.resolve_data_root("rel/data") == Path.cwd() / "rel" / "data"  # absolute: workers run elsewhere


def test_loader_uses_env_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    x, y, _, _ = make_idx(tmp_path, "MNIST", "test")
    monkeypatch.setenv("DGR_DATA_ROOT", str(tmp_path))
    images, labels = ds.load_mnist(None, "test")
    assert np.array_equal(images[:, 0].numpy(), x) and np.array_equal(labels.numpy(), y)


# ------------------------------------------------------------------------------------ IDX

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_round_trip(tmp_path: Path, gz: bool, name: str, folder: str, split: str) -> None:
    x, y, _, _ = make_idx(tmp_path, folder, split, gz=gz)
    images, labels = ds.load_dataset(name, tmp_path, split)
    assert images.dtype == torch.uint8 and images.shape == (7, 1, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (7,)
    assert np.array_equal(images[:, 0].numpy(), x)
    assert np.array_equal(labels.numpy(), y)


def test_uncompressed_preferred_over_gz(tmp_path: Path) -> None:
    make_idx(tmp_path, gz=True, labels=b"garbage, never read")
    x, y, _, _ = make_idx(tmp_path, gz=False)
    images, labels = ds.load_mnist(tmp_path, "train")
    assert np.array_equal(labels.numpy(), y) and np.array_equal(images[:, 0].numpy(), x)


def test_missing_file_names_expected_path(tmp_path: Path) -> None:
    msg = raises(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", ds.load_mnist,
                 tmp_path, "train")
    assert "download_dataset('mnist'" in msg and "DGR_DATA_ROOT" in msg
    msg = raises(tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte",
                 ds.load_fashion_mnist, tmp_path, "test")
    assert "download_dataset('fashion_mnist'" in msg


def test_wrong_magic(tmp_path: Path) -> None:
    x = np.zeros((3, 28, 28), np.uint8)
    _, _, ip, _ = make_idx(tmp_path, n=3, images=idx_images(x, magic=1234))
    msg = raises(ip, ds.load_mnist, tmp_path, "train")
    assert "expected magic 2051, got 1234" in msg


def test_truncated_payload(tmp_path: Path) -> None:
    x = np.zeros((3, 28, 28), np.uint8)
    _, _, ip, _ = make_idx(tmp_path, n=3, images=idx_images(x)[:-10], gz=False)
    raises(ip, ds.load_mnist, tmp_path, "train")


def test_header_count_mismatch(tmp_path: Path) -> None:
    y = np.zeros(3, np.uint8)
    _, _, _, lp = make_idx(tmp_path, n=3, labels=idx_labels(y, n=4))
    raises(lp, ds.load_mnist, tmp_path, "train")


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    _, _, ip, lp = make_idx(tmp_path, n=3, labels=idx_labels(np.zeros(2, np.uint8)))
    msg = raises(ip, ds.load_mnist, tmp_path, "train")
    assert str(lp) in msg


def test_wrong_image_size(tmp_path: Path) -> None:
    x = np.zeros((3, 27, 28), np.uint8)
    _, _, ip, _ = make_idx(tmp_path, n=3, images=idx_images(x))
    raises(ip, ds.load_mnist, tmp_path, "train")


def test_bad_gzip(tmp_path: Path) -> None:
    make_idx(tmp_path)
    ip = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    ip.write_bytes(b"this is not gzip data at all")
    raises(ip, ds.load_mnist, tmp_path, "train")
    ip.write_bytes(gzip.compress(idx_images(np.zeros((7, 28, 28), np.uint8)))[:-20])  # truncated
    raises(ip, ds.load_mnist, tmp_path, "train")


def test_unknown_name_and_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="mnist, fashion_mnist, svhn"):
        ds.load_dataset("cifar10", tmp_path, "train")
    with pytest.raises(DatasetError, match="split"):
        ds.load_mnist(tmp_path, "val")


# ----------------------------------------------------------------------------------- SVHN

@pytest.mark.parametrize("sub", ["SVHN", ""])
def test_svhn_layout_labels_and_axes(tmp_path: Path, sub: str) -> None:
    x, _ = make_svhn(tmp_path / sub / "test_32x32.mat")
    x[1, 2, 0, 3] = 7  # distinct value at h=1, w=2, channel 0, sample 3 (rewrite file below)
    x[1, 2, 1, 3] = 201
    x[1, 2, 2, 3] = 99
    savemat(str(tmp_path / sub / "test_32x32.mat"),
                     {"X": x, "y": np.array([[10], [1], [2], [9], [10]], np.uint8)})
    images, labels = ds.load_dataset("svhn", tmp_path, "test")
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 9, 0]
    assert images[3, :, 1, 2].tolist() == [7, 201, 99]
    assert np.array_equal(images.numpy(), x.transpose(3, 2, 0, 1))


def test_svhn_prefers_svhn_subfolder(tmp_path: Path) -> None:
    make_svhn(tmp_path / "SVHN" / "train_32x32.mat", n=2, y=np.array([[3], [4]], np.uint8))
    make_svhn(tmp_path / "train_32x32.mat", n=1, y=np.array([[5]], np.uint8))
    assert ds.load_svhn(tmp_path, "train")[1].tolist() == [3, 4]


def test_svhn_missing(tmp_path: Path) -> None:
    msg = raises(tmp_path / "SVHN" / "train_32x32.mat", ds.load_svhn, tmp_path, "train")
    assert "ufldl.stanford.edu/housenumbers" in msg and "download_dataset('svhn'" in msg


def test_svhn_corrupt_mat(tmp_path: Path) -> None:
    path = tmp_path / "SVHN" / "test_32x32.mat"
    path.parent.mkdir()
    path.write_bytes(b"MATLAB 5.0 MAT-file, but truncated \x00\x01" * 3)
    raises(path, ds.load_svhn, tmp_path, "test")


def test_svhn_label_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "SVHN" / "test_32x32.mat"
    make_svhn(path, n=3, y=np.array([[1], [0], [10]], np.uint8))
    msg = raises(path, ds.load_svhn, tmp_path, "test")
    assert "1..10" in msg


def test_svhn_bad_keys_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "SVHN" / "test_32x32.mat"
    path.parent.mkdir()
    savemat(str(path), {"images": np.zeros((32, 32, 3, 2), np.uint8)})
    raises(path, ds.load_svhn, tmp_path, "test")
    savemat(str(path), {"X": np.zeros((32, 32, 1, 2), np.uint8), "y": np.ones((2, 1))})
    raises(path, ds.load_svhn, tmp_path, "test")
    savemat(str(path), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    raises(path, ds.load_svhn, tmp_path, "test")


# --------------------------------------------------------------------------- no writes to root

def test_loaders_never_write_into_root(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    make_idx(root, "MNIST", "train", gz=True)
    make_idx(root, "FashionMNIST", "test", gz=False)
    make_svhn(root / "SVHN" / "test_32x32.mat")
    before = listing(root)
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for d in dirs:  # read-only dirs (ineffective as root, hence the listing comparison too)
        d.chmod(0o555)
    try:
        ds.load_mnist(root, "train")
        ds.load_fashion_mnist(root, "test")
        ds.load_svhn(root, "test")
        with pytest.raises(DatasetError):
            ds.load_mnist(root, "test")
    finally:
        for d in dirs:
            d.chmod(0o755)
    assert listing(root) == before


# ----------------------------------------------------------------------------------- download

def test_download_failure_becomes_dataset_error(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    def mnist(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    fake = SimpleNamespace(datasets=SimpleNamespace(MNIST=mnist))
    monkeypatch.setattr(dgr.vision, "import_torchvision", lambda: fake)
    msg = raises(tmp_path, ds.download_dataset, "mnist", tmp_path)
    assert "could not download mnist" in msg and "network unreachable" in msg


def test_download_multiline_error_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    def svhn(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading:\n<urlopen error [Errno -3]>\nretry later")

    fake = SimpleNamespace(datasets=SimpleNamespace(SVHN=svhn))
    monkeypatch.setattr(ds, "_import_torchvision", lambda: fake)
    msg = raises(tmp_path, ds.download_dataset, "svhn", tmp_path)
    assert "retry later" in msg


def test_download_calls_torchvision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, tuple, dict]] = []

    def rec(kind: str):
        return lambda *a, **k: calls.append((kind, a, k))

    fake = SimpleNamespace(datasets=SimpleNamespace(
        MNIST=rec("MNIST"), FashionMNIST=rec("FashionMNIST"), SVHN=rec("SVHN")))
    monkeypatch.setattr(ds, "_import_torchvision", lambda: fake)
    ds.download_dataset("fashion_mnist", tmp_path)
    ds.download_dataset("svhn", tmp_path)
    assert [(c[0], c[2]) for c in calls] == [
        ("FashionMNIST", {"train": True, "download": True}),
        ("FashionMNIST", {"train": False, "download": True}),
        ("SVHN", {"split": "train", "download": True}),
        ("SVHN", {"split": "test", "download": True}),
    ]
    assert Path(calls[0][1][0]) == tmp_path and Path(calls[2][1][0]) == tmp_path / "SVHN"
    with pytest.raises(DatasetError, match="unknown dataset"):
        ds.download_dataset("imagenet", tmp_path)


# ------------------------------------------------------------------------------- real data

@pytest.mark.integration
def test_real_mnist(real_data_root: Path) -> None:
    root = real_data_root
    x_train, y_train = ds.load_mnist(root, "train")
    x_test, y_test = ds.load_mnist(root, "test")
    assert x_train.shape == (60000, 1, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 1, 28, 28) and y_test.shape == (10000,)
    assert torch.bincount(y_train, minlength=10)[:2].tolist() == [5923, 6742]
    assert abs(x_train.double().mean().item() - 33.318) < 1e-3
