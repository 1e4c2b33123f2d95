"""Encoded images a user already has: image folders (torchvision's ImageFolder layout) and Parquet files
(the layout Hugging Face image datasets export). Decoded with PIL; pyarrow and PIL are imported lazily.
`write_parquet` writes that layout (e.g. to turn arrays into a source).

Both readers return decoded images (H, W, C) uint8 arrays, integer labels and a name per image (its file,
or its Parquet file and row) for errors; `dgr.shapes.InputShape.stack` makes them one tensor.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dgr.datasets import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
Decoded = tuple[list[np.ndarray], np.ndarray, list[str]]  # images (H, W, C), labels (N,), names


def decode(data: bytes | Path, name: str) -> np.ndarray:
    """PNG/JPEG bytes or file -> uint8 (H, W, 1) grey or (H, W, 3) RGB; a bad image fails naming `name`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            image.load()  # decodes now, so a truncated file fails here rather than later
            grey = image.mode in ("1", "L", "LA", "I", "I;16", "F")
            array = np.asarray(image.convert("L" if grey else "RGB"))
    # DecompressionBombError: a header claiming over 2 * MAX_IMAGE_PIXELS pixels (not an OSError)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(" ".join(f"{name}: unreadable image ({exc})".split())) from exc
    return array[:, :, None] if array.ndim == 2 else array


def class_folders(split_dir: Path, origin: str) -> list[str]:
    """Sorted class names of ROOT/<split>/<class>/ (hidden folders skipped)."""
    if not split_dir.is_dir():
        raise DatasetError(f"{origin}: folder {split_dir} not found; expected {split_dir}/<class>/<image>.png")
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DatasetError(f"{origin}: {split_dir} has no class folders; expected {split_dir}/<class>/<image>.png")
    return names


def read_folder(split_dir: Path, classes: Sequence[str], origin: str) -> Decoded:
    """Every PNG/JPEG of ROOT/<split>/<class>/, labelled by the class's position in `classes`."""
    images, labels, names = [], [], []
    label_of = {name: i for i, name in enumerate(classes)}
    for folder in class_folders(split_dir, origin):
        if folder not in label_of:
            raise DatasetError(f"{origin}: class folder {split_dir / folder} is not one of the classes "
                               f"({', '.join(classes)}); list it in stream.class_names")
        files = sorted(p for p in (split_dir / folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{origin}: class folder {split_dir / folder} has no PNG or JPEG images")
        for path in files:
            images.append(decode(path, str(path)))
            labels.append(label_of[folder])
            names.append(str(path))
    return images, np.asarray(labels, dtype=np.int64), names


def parquet_files(base: Path, split: str, origin: str) -> list[Path]:
    """BASE/<split>.parquet, BASE/<split>/*.parquet, or the Hub's shards BASE[/data]/<split>-*.parquet."""
    candidates = [[base / f"{split}.parquet"], sorted((base / split).glob("*.parquet")),
                  sorted(base.glob(f"{split}-*.parquet")), sorted((base / "data").glob(f"{split}-*.parquet"))]
    found = next((files for files in candidates if files and files[0].is_file()), None)
    if found is None:
        raise DatasetError(f"{origin}: no {split} split under {base}; expected {base}/{split}.parquet, "
                           f"{base}/{split}/*.parquet or {base}/{split}-*.parquet")
    return found


def _check_schema(schema: Any, path: Path) -> str:
    """The image column's kind ("struct" with encoded `bytes`, or "binary"); wrong columns fail here."""
    import pyarrow as pa

    names = set(schema.names)
    if not {"image", "label"} <= names:
        raise DatasetError(f"{path}: expected columns 'image' and 'label', found {', '.join(sorted(names))}")
    label, image = schema.field("label").type, schema.field("image").type
    if not pa.types.is_integer(label):
        raise DatasetError(f"{path}: column 'label' must hold integers, found {label}")
    if pa.types.is_struct(image) and image.get_field_index("bytes") >= 0:
        return "struct"
    if pa.types.is_binary(image) or pa.types.is_large_binary(image):
        return "binary"
    raise DatasetError(f"{path}: column 'image' must be a struct with encoded 'bytes' or binary, found {image}")


def parquet_class_names(path: Path) -> tuple[str, ...]:
    """The label names a Hugging Face export records in its schema metadata (a ClassLabel's
    `info.features.label.names`), else ().

    Metadata without a `label` object there (another tool's, or a plain integer `Value` label) records no
    names and is ignored; a `names` entry is meant as the names, so it must be a list of distinct strings
    (an empty one records none).
    """
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception as exc:  # ArrowInvalid on a corrupt file
        raise _unreadable(path, exc) from exc
    try:
        label = json.loads(metadata.get(b"huggingface", b"{}"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DatasetError(f"{path}: its 'huggingface' schema metadata is not JSON ({exc})") from exc
    for key in ("info", "features", "label"):
        label = label.get(key) if isinstance(label, dict) else None
    if not isinstance(label, dict) or "names" not in label:
        return ()
    names = label["names"]
    where = f"{path}: info.features.label.names in its 'huggingface' schema metadata"
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        shown = json.dumps(names)
        raise DatasetError(f"{where} must be a list of distinct strings, got "
                           f"{shown if len(shown) <= 60 else shown[:57] + '...'}")
    repeated = [(name, count) for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise DatasetError(f"{where} must be distinct, {repeated[0][0]!r} appears {repeated[0][1]} times")
    return tuple(names)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 1) or (H, W, 3) -> PNG bytes (lossless: `decode` gives the same array back)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(path: Path, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = (),
                  struct: bool = True) -> Path:
    """uint8 images (N, H, W, C) and integer labels as one Parquet file in the Hugging Face export layout
    (`image` {bytes, path} structs of PNG records, or plain binary with `struct=False`; `label`), with the
    label names as a ClassLabel in the schema metadata when given. Written to a temporary name, then
    renamed, so a failed write leaves no half file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    encoded = [encode_png(image) for image in images]
    column = [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(encoded)] if struct else encoded
    table = pa.table({"image": column, "label": np.asarray(labels).tolist()})
    if class_names:
        features = {"image": {"_type": "Image"}, "label": {"names": list(class_names), "_type": "ClassLabel"}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(table, partial)
    partial.replace(path)
    return path


def parquet_labels(path: Path) -> np.ndarray:
    """The `label` column of the Parquet file `path` alone (no image is read or decoded)."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        _check_schema(table.schema_arrow, path)
        column = table.read(columns=["label"]).column("label")
    except DatasetError:
        raise
    except Exception as exc:  # as in read_parquet
        raise _unreadable(path, exc) from exc
    if column.null_count:
        raise DatasetError(f"{path}: {column.null_count} rows without a label")
    return int64_labels(column.to_numpy(), path)


def int64_labels(values: np.ndarray, origin: Path | str) -> np.ndarray:
    """Integer labels as int64. An unsigned label int64 cannot hold (2**63 or more) is named here: cast, it
    would wrap to a negative number and be reported as one."""
    if values.dtype.kind == "u" and values.size and int(values.max()) > np.iinfo(np.int64).max:
        raise DatasetError(f"{origin}: label {int(values.max())} is too large; labels must run 0..K-1")
    return values.astype(np.int64)


def read_parquet(files: Sequence[Path]) -> Decoded:
    """Decode every row of the Parquet `files`, batch by batch (the encoded column is never all in memory)."""
    import pyarrow.parquet as pq

    images, labels, names = [], [], []
    for path in files:
        try:
            table = pq.ParquetFile(path)
            kind = _check_schema(table.schema_arrow, path)
            row = 0
            for batch in table.iter_batches(columns=["image", "label"], batch_size=1024):
                column = batch.column("image")
                encoded = (column.field("bytes") if kind == "struct" else column).to_pylist()
                for value, label in zip(encoded, batch.column("label").to_pylist()):
                    name = f"{path} row {row}"
                    if value is None or label is None:
                        raise DatasetError(f"{name}: missing {'image bytes' if value is None else 'label'}")
                    images.append(decode(value, name))
                    names.append(name)
                    row += 1
                labels.append(int64_labels(batch.column("label").to_numpy(), path))
        except DatasetError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on a corrupt or truncated file
            raise _unreadable(path, exc) from exc
    return images, np.concatenate(labels) if labels else np.zeros(0, np.int64), names


def _unreadable(path: Path, exc: Exception) -> DatasetError:
    return DatasetError(" ".join(f"{path}: unreadable Parquet file ({type(exc).__name__}: {exc})".split()))
