"""Task sources: where a stream's images come from, each with a train and a test split.

A source is named in `stream.sources` as KIND[:PATH]:
- `mnist`, `fashion_mnist`, `svhn`: the built-in datasets under the data root (`dgr.datasets`);
- `folder:PATH`: PATH/train/<class>/<image>.png|jpg and PATH/test/<class>/... (ImageFolder layout);
- `parquet:PATH`: PATH/train.parquet, PATH/train/*.parquet or PATH[/data]/train-*.parquet (and test),
  with an `image` column (struct with encoded `bytes`, or binary) and an integer `label` column;
- `npz:PATH`: PATH/train.npz and PATH/test.npz holding `x` uint8 (N, H, W[, C]) and `y` integers (N,).
A relative PATH is taken under the data root; an absolute one as it is.

Labels are 0..K-1: K is the length of `stream.class_names` when given, else the number of class folders
(sorted names give the labels), else the label names a Hugging Face Parquet export records, else the
largest training label + 1 (at most the number of training images). Every check fails with a one-line
`DatasetError` naming the file, before any training starts.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dgr.config import BUILT_IN_SOURCES, parse_source
from dgr.datasets import DatasetError, PathArg, load_dataset, resolve_data_root
from dgr.image_files import (Decoded, class_folders, int64_labels, parquet_class_names, parquet_files, parquet_labels,
                             read_folder, read_parquet)
from dgr.shapes import InputShape

SPLITS = ("train", "test")
_TITLES = {"fashion_mnist": "fashion"}  # the task names the built-in streams have always had
Split = tuple[torch.Tensor, torch.Tensor]  # uint8 (N, C, H, W), int64 (N,)


@dataclass(frozen=True, eq=False)
class SourceData:
    title: str  # names the source's tasks: "mnist", "site_a", ...
    class_names: tuple[str, ...]  # label i is class_names[i]
    train: Split
    test: Split


def load_source(text: str, root: PathArg, shape: InputShape, class_names: tuple[str, ...] = ()) -> SourceData:
    """Both splits of the source `text`, fitted to `shape`, labels checked against the classes."""
    kind, path = parse_source(text)
    names = source_classes(text, root, class_names)
    if kind in BUILT_IN_SOURCES:
        train, test = (_fitted(load_dataset(kind, root, s), shape, f"{kind} {s}") for s in SPLITS)
        return _checked(source_title(text, root), names, train, test, (f"{kind} train", f"{kind} test"))
    base = _folder(text, path, root)
    if kind == "folder":
        train, test = (_stacked(read_folder(base / s, names, text), shape, text) for s in SPLITS)
        origins = (str(base / "train"), str(base / "test"))
    elif kind == "parquet":
        files = [parquet_files(base, s, text) for s in SPLITS]
        train, test = (_stacked(read_parquet(f), shape, text) for f in files)
        origins = (str(files[0][0].parent), str(files[1][0].parent))
    else:
        origins = (str(base / "train.npz"), str(base / "test.npz"))
        train, test = (_fitted(_read_npz(Path(o)), shape, o) for o in origins)
    return _checked(source_title(text, root), names, train, test, origins)


def source_title(text: str, root: PathArg) -> str:
    """Names the source's tasks: the dataset ("mnist", "fashion") or the last folder of its path."""
    kind, path = parse_source(text)
    if kind in BUILT_IN_SOURCES:
        return _TITLES.get(kind, kind)
    return _path(path, root).name


def source_classes(text: str, root: PathArg, class_names: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The source's class names (label i is the i-th), read without decoding any image: `class_names`
    if given, the digits of a built-in dataset, the class folders, a Hub export's label names, or
    0..K-1 for the largest training label K-1 (see `_numbered_classes`)."""
    kind, path = parse_source(text)
    if class_names:
        return class_names
    if kind in BUILT_IN_SOURCES:
        return tuple(str(d) for d in range(10))
    base = _folder(text, path, root)
    if kind == "folder":
        return tuple(class_folders(base / "train", text))
    if kind == "parquet":
        files = parquet_files(base, "train", text)
        names = parquet_class_names(files[0])
        if names:
            return names
        return _numbered_classes({path: parquet_labels(path) for path in files})
    path = base / "train.npz"
    return _numbered_classes({path: _npz_arrays(path, ("y",))[0]})


def _numbered_classes(labels: dict[Path, np.ndarray]) -> tuple[str, ...]:
    """Class names "0".."K-1" for the training labels of each file, K their largest + 1.

    K may not exceed the number of training images. A class needs a training image to be learnt, so the
    bound only refuses data most of whose classes could not be; it scales with the data (no fixed cap to
    outgrow), and a stray label (10**9 among four rows) fails here, naming its file, before K names or a
    K-wide head are made. Whoever does mean classes without images lists them in stream.class_names.
    """
    rows = sum(len(y) for y in labels.values())
    high = -1
    for path, y in labels.items():
        if not len(y):
            continue
        if int(y.min()) < 0:
            raise DatasetError(f"{path}: label {int(y.min())} is negative; labels must run 0..K-1")
        if int(y.max()) >= rows:
            raise DatasetError(f"{path}: label {int(y.max())} would make {int(y.max()) + 1} classes for {rows} "
                               f"training images; labels must run 0..K-1 with K at most the number of training "
                               f"images, or stream.class_names must list the K classes")
        high = max(high, int(y.max()))
    return tuple(str(i) for i in range(high + 1))


def _path(path: str, root: PathArg) -> Path:
    return resolve_data_root(root) / Path(path).expanduser()  # an absolute path replaces the root


def _folder(text: str, path: str, root: PathArg) -> Path:
    base = _path(path, root)
    if not base.is_dir():
        raise DatasetError(f"{text}: folder {base} not found")
    return base


def _fitted(split: Split, shape: InputShape, origin: str) -> Split:
    return shape.apply(split[0], origin), split[1]


def _stacked(decoded: Decoded, shape: InputShape, origin: str) -> Split:
    images, labels, names = decoded
    return shape.stack(images, names, origin), torch.from_numpy(labels)


def _checked(title: str, names: tuple[str, ...], train: Split, test: Split, origins: tuple[str, str]) -> SourceData:
    for (x, y), origin in zip((train, test), origins):
        if len(y) == 0:
            raise DatasetError(f"{origin}: no images")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= len(names):
            raise DatasetError(f"{origin}: labels must be in 0..{len(names) - 1} ({len(names)} classes), "
                               f"found {low}..{high}; list every class in stream.class_names")
    return SourceData(title, names, train, test)


def _npz_arrays(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    """The arrays `keys` of the .npz file `path` (only those are read from it)."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; expected arrays x (N, H, W[, C]) uint8 and y (N,)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if not {"x", "y"} <= set(arrays.files):
                raise DatasetError(f"{path}: expected arrays x and y, found {', '.join(arrays.files) or 'none'}")
            chosen = [arrays[key] for key in keys]
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated, not a zip, pickled objects
        raise DatasetError(" ".join(f"{path}: unreadable .npz file ({type(exc).__name__}: {exc})".split())) from exc
    if "y" in keys and not np.issubdtype(chosen[keys.index("y")].dtype, np.integer):
        raise DatasetError(f"{path}: y must hold integers, got {chosen[keys.index('y')].dtype}")
    return chosen


def _read_npz(path: Path) -> Split:
    """x uint8 (N, H, W[, C]) and y integers (N,) -> uint8 (N, C, H, W), int64 (N,)."""
    x, y = _npz_arrays(path, ("x", "y"))
    if (x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3))
            or 0 in x.shape[1:3]):
        raise DatasetError(f"{path}: x must be uint8 (N, H, W) or (N, H, W, 1|3) with H, W >= 1, "
                           f"got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"{path}: y must have shape ({len(x)},) like x's first axis, got {y.shape}")
    images = torch.from_numpy(x if x.ndim == 4 else x[..., None]).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(int64_labels(y, path))
