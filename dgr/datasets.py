"""Offline loaders for MNIST, Fashion-MNIST and SVHN as uint8 tensors.

The loaders read the original distribution files directly (IDX and MATLAB format 2) instead of
going through torchvision, because torchvision's ``download=False`` path insists on uncompressed
files and ``download=True`` writes into the data root, which may be a read-only shared folder.
Nothing here touches the network or writes to disk, except ``download_dataset``, which is an
explicit opt-in for machines with internet.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = [
    "DATA_ROOT_ENV",
    "DATASET_NAMES",
    "DatasetError",
    "default_data_root",
    "download_dataset",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "load_svhn",
    "resolve_data_root",
]

DATA_ROOT_ENV = "DGR_DATA_ROOT"
DATASET_NAMES = ("mnist", "fashion_mnist", "svhn")
_SPLITS = ("train", "test")
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_IDX_PREFIX = {"train": "train", "test": "t10k"}  # the original test files are called t10k-*
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

PathArg = str | os.PathLike[str] | None


class DatasetError(Exception):
    """One-line, user-facing: names the file/path expected and how to obtain it."""


def _one_line(text: object) -> str:
    # Messages end up in CLI output and logs; keep them on a single line.
    return " ".join(str(text).split())


def default_data_root() -> Path:
    """``$DGR_DATA_ROOT`` if set (and non-empty), else ``./data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else Path("./data")


def resolve_data_root(root: PathArg) -> Path:
    """``root`` if given, else :func:`default_data_root`, as an absolute path: it is handed to processes
    that run in other directories (Ray Train workers, Tune trials)."""
    return (Path(root).expanduser() if root is not None else default_data_root()).absolute()


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(_SPLITS)}")


# ---------------------------------------------------------------------------- IDX (MNIST family)

def _read_maybe_gz(base: Path, *, dataset: str, key: str, root: Path) -> tuple[bytes, Path]:
    """Bytes of ``base`` or ``base.gz`` (uncompressed wins: it is what torchvision extracts)."""
    gz = base.with_name(base.name + ".gz")
    if base.is_file():
        try:
            return base.read_bytes(), base
        except OSError as exc:
            raise DatasetError(_one_line(f"cannot read {dataset} file {base}: {exc}")) from exc
    if gz.is_file():
        try:
            with gzip.open(gz, "rb") as fh:
                return fh.read(), gz
        except (gzip.BadGzipFile, EOFError, OSError) as exc:
            raise DatasetError(_one_line(f"corrupt gzip file {gz}: {exc}")) from exc
    raise DatasetError(
        f"{dataset} file not found: {base}[.gz]; put the original IDX files there "
        f"(torchvision layout), set {DATA_ROOT_ENV} or --data-root, or call "
        f"download_dataset({key!r}, {str(root)!r}) on a machine with internet"
    )


def _parse_idx(raw: bytes, path: Path, *, magic: int, dims: int) -> np.ndarray:
    """Validate an IDX header and return the uint8 payload shaped (n, *dims)."""
    header_len = 4 * (1 + dims)
    if len(raw) < header_len:
        raise DatasetError(f"corrupt IDX file {path}: {len(raw)} bytes, shorter than the header")
    got_magic, *shape = struct.unpack(f">{1 + dims}I", raw[:header_len])
    if got_magic != magic:
        raise DatasetError(f"corrupt IDX file {path}: expected magic {magic}, got {got_magic}")
    expected = int(np.prod(shape, dtype=np.int64))
    payload = len(raw) - header_len
    if payload != expected:
        raise DatasetError(
            f"corrupt IDX file {path}: header {tuple(shape)} needs {expected} bytes of data, "
            f"found {payload}"
        )
    # frombuffer avoids Python-level loops (full MNIST loads in a fraction of a second); copy so
    # the tensor owns writable memory instead of aliasing the immutable bytes object.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def _load_idx_pair(folder: str, dataset: str, key: str, root: PathArg, split: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    _check_split(split)
    base = resolve_data_root(root)
    raw_dir = base / folder / "raw"
    prefix = _IDX_PREFIX[split]
    img_raw, img_path = _read_maybe_gz(raw_dir / f"{prefix}-images-idx3-ubyte",
                                       dataset=dataset, key=key, root=base)
    lbl_raw, lbl_path = _read_maybe_gz(raw_dir / f"{prefix}-labels-idx1-ubyte",
                                       dataset=dataset, key=key, root=base)
    images = _parse_idx(img_raw, img_path, magic=_IDX_IMAGES_MAGIC, dims=3)
    labels = _parse_idx(lbl_raw, lbl_path, magic=_IDX_LABELS_MAGIC, dims=1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"corrupt IDX file {img_path}: expected 28x28 images, "
                           f"got {images.shape[1]}x{images.shape[2]}")
    if len(images) != len(labels):
        raise DatasetError(f"IDX count mismatch: {img_path} has {len(images)} images but "
                           f"{lbl_path} has {len(labels)} labels")
    if labels.size and int(labels.max()) > 9:
        raise DatasetError(f"corrupt IDX file {lbl_path}: label {int(labels.max())} outside 0..9")
    return (torch.from_numpy(images).unsqueeze(1),  # (N, 1, 28, 28): channel-first like torch
            torch.from_numpy(labels.astype(np.int64)))


def load_mnist(root: PathArg, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` ("train"/"test"): uint8 images (N, 1, 28, 28), int64 labels (N,)."""
    return _load_idx_pair("MNIST", "MNIST", "mnist", root, split)


def load_fashion_mnist(root: PathArg, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split``: uint8 images (N, 1, 28, 28), int64 labels (N,)."""
    return _load_idx_pair("FashionMNIST", "Fashion-MNIST", "fashion_mnist", root, split)


# ----------------------------------------------------------------------------------------- SVHN

def load_svhn(root: PathArg, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """SVHN format 2 ``split``: uint8 images (N, 3, 32, 32), int64 labels (N,) in 0..9."""
    _check_split(split)
    base = resolve_data_root(root)
    name = f"{split}_32x32.mat"
    # ROOT/SVHN/<file> is this project's layout; ROOT/<file> is what torchvision's SVHN(root)
    # produces when it is handed the SVHN folder itself.
    candidates = [base / "SVHN" / name, base / name]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DatasetError(
            f"SVHN file not found: {candidates[0]} (or {candidates[1]}); get {name} from "
            f"{_SVHN_URL} (format 2, cropped digits), set {DATA_ROOT_ENV} or --data-root, or "
            f"call download_dataset('svhn', {str(base)!r}) on a machine with internet"
        )
    from scipy.io import loadmat  # lazy: scipy is only needed for SVHN

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # loadmat raises ValueError/TypeError/MatReadError/... on bad input
        raise DatasetError(_one_line(f"corrupt SVHN file {path}: {type(exc).__name__}: {exc}")
                           ) from exc
    if "X" not in mat or "y" not in mat:
        raise DatasetError(f"corrupt SVHN file {path}: expected variables X and y, "
                           f"found {sorted(k for k in mat if not k.startswith('__'))}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DatasetError(f"corrupt SVHN file {path}: X must be uint8 (32, 32, 3, N), "
                           f"got {x.dtype} {x.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != x.shape[3]:
        raise DatasetError(f"corrupt SVHN file {path}: y must be ({x.shape[3]}, 1), got {y.shape}")
    if y.size and (int(y.min()) < 1 or int(y.max()) > 10):
        raise DatasetError(f"corrupt SVHN file {path}: labels must be in 1..10, "
                           f"found {int(y.min())}..{int(y.max())}")
    # MATLAB stores X[row, col, channel, n]; torch wants [n, channel, row, col].
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    labels = y.astype(np.int64) % 10  # SVHN encodes digit 0 as label 10
    return torch.from_numpy(images), torch.from_numpy(labels)


# ----------------------------------------------------------------------------------- dispatch

_LOADERS: dict[str, Callable[[PathArg, str], tuple[torch.Tensor, torch.Tensor]]] = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "svhn": load_svhn,
}


def _check_name(name: str) -> None:
    if name not in _LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


def load_dataset(name: str, root: PathArg, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to the loader for ``name`` ("mnist", "fashion_mnist" or "svhn")."""
    _check_name(name)
    return _LOADERS[name](root, split)


def _import_torchvision() -> Any:
    # Imported lazily so loading data never needs torchvision; a separate hook lets tests fake it.
    from dgr.vision import import_torchvision

    return import_torchvision()


def download_dataset(name: str, root: PathArg) -> None:
    """Fetch ``name`` into ``root`` with torchvision (needs internet; writes into ``root``)."""
    _check_name(name)
    base = resolve_data_root(root)
    try:
        tv = _import_torchvision()
        if name == "svhn":
            for split in _SPLITS:
                tv.datasets.SVHN(str(base / "SVHN"), split=split, download=True)
        else:
            cls = tv.datasets.MNIST if name == "mnist" else tv.datasets.FashionMNIST
            for train in (True, False):
                cls(str(base), train=train, download=True)
    except DatasetError:
        raise
    except Exception as exc:  # no network, URLError, OSError, RuntimeError, missing torchvision
        raise DatasetError(_one_line(
            f"could not download {name} into {base}: {type(exc).__name__}: {exc}; check the "
            f"internet connection or place the files there by hand (see load_{name})"
        )) from exc
