"""Privacy evidence for a chain: the memorisation audit of each version, and an audit of its stored files.

Per version (`audit_version`, called by the driver before it registers a task's scholar): the scholar's
generator is scored by `dgr.privacy` against the real images of the tasks learned so far; the figures
become metrics of the task's run (at the task's step) and `privacy.*` tags the version is created with, so
no version exists without its audit. Arms without a generator get a tag saying what real data they keep:
none for fine-tuning, past training images by design for ER and Joint.

Per chain (`audit_chain_files`): every artifact of the chain's runs and every registered version's files
are downloaded and searched for every training image of the stream, as raw uint8 pixels (for MNIST and
Fashion-MNIST these are the IDX files' image records, byte for byte) and as float32 pixels in [0, 1] (what
a tensor of the image holds), inside zip archives (torch checkpoints) too. The search finds one 8-byte key
per image (its most varied 8 bytes) anywhere in a file, then compares the whole image at each hit. JSON
files (an input example, say) are also read for images written as numbers.
Encoded images (a PNG of a training image, a sample grid) are not decoded: sample grids are generated.

    python -m pipelines.audit [--config FILE] [--set k=v ...] [--data-root DIR] [--workdir DIR]

audits the chain those settings name (exit 0: no training image found, 1: found, 2: bad input).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import zipfile
from dataclasses import asdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dgr.config import Config
from dgr.datasets import resolve_data_root
from dgr.privacy import audit_generator
from dgr.scholar import Scholar
from dgr.streams import Task, build_stream
from pipelines import cli, registry, tracking
from pipelines.settings import load_settings

KEY = 8  # bytes per search key: one uint64
# What each arm keeps of real training data, for versions without a generator to audit.
REAL_DATA = {
    "gr": "none kept: replays generated samples",
    "none": "none kept: replays nothing (fine-tuning)",
    "er": "past tasks' training images, replayed by design (rebuilt from the data root by each worker; "
          "not in the registered files)",
    "joint": "every task's training images so far, trained on by design (read from the data root; "
             "not in the registered files)",
}


def audit_version(run_id: str, scholar: Scholar, learned: Sequence[Task], config: Config) -> dict[str, str]:
    """Audit a scholar's generator over `learned` (tasks 0..k) before it is registered: the figures are
    logged on the task run (step k) and returned as the `privacy.*` tags its version is created with."""
    tags = {"privacy.real_data": REAL_DATA[config.replay.arm]}
    if scholar.generator is None:
        tags["privacy.generator"] = "none"
        return tags
    score = audit_generator(scholar.generator, learned, seed=config.run.seed)
    metrics = {"privacy.nn_ratio": score.nn_ratio, "privacy.copy_ratio": score.copy_ratio,
               "privacy.near_copy_fraction": score.near_copy_fraction,
               "privacy.threshold": score.threshold, "privacy.audit_seconds": score.seconds}
    tracking.log_metrics(run_id, metrics, step=learned[-1].index)
    tags.update({key: f"{value:.4f}" for key, value in metrics.items() if key != "privacy.audit_seconds"})
    tags.update({"privacy.generator": config.generator.kind, "privacy.samples": str(score.samples),
                 "privacy.references": str(score.references)})
    return tags


@dataclass(frozen=True)
class Finding:
    file: str  # relative to the audit's download folder: runs/<run id>/... or versions/<version>/...
    task: int
    image: int  # row of the task's training images
    form: str  # uint8 | float32 | JSON numbers
    offset: int  # in the file, or in the zip member named in `file`; for JSON, the index of its first number


@dataclass
class FileAudit:
    files: int = 0
    bytes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings


class Needles:
    """Every training image of `tasks` in both byte forms, with one search key each."""

    def __init__(self, tasks: Sequence[Task]):
        self.images: list[np.ndarray] = []  # (N, L) uint8 per form and task
        self.labels: list[tuple[str, int]] = []  # (form, task)
        keys, owners = [], []
        for task in tasks:
            pixels = task.train_x.reshape(len(task.train_x), -1).numpy()  # (N, D)
            as_float = (pixels.astype(np.float32) / np.float32(255.0)).view(np.uint8)  # (N, 4D)
            for form, rows, size in (("uint8", pixels, 1), ("float32", as_float, 4)):
                offsets = size * _key_pixels(pixels, KEY // size)  # in bytes
                keys.append(_keys(rows, offsets))
                owners.append(np.stack([np.full(len(rows), len(self.images)), np.arange(len(rows)), offsets], 1))
                self.images.append(np.ascontiguousarray(rows))
                self.labels.append((form, task.index))
        self.keys = np.concatenate(keys)  # (K,) uint64
        self.owners = np.concatenate(owners)  # (K, 3): which image array, which row, key offset in it
        order = np.argsort(self.keys)
        self.keys, self.owners = self.keys[order], self.owners[order]

    def find(self, data: bytes, name: str) -> Iterator[Finding]:
        buffer = np.frombuffer(data, dtype=np.uint8)
        for shift in range(KEY):
            usable = (len(buffer) - shift) // KEY * KEY
            if usable <= 0:
                break
            words = buffer[shift:shift + usable].view("<u8")
            first = np.searchsorted(self.keys, words).clip(max=len(self.keys) - 1)
            for hit in np.nonzero(self.keys[first] == words)[0]:
                position = shift + KEY * int(hit)
                last = np.searchsorted(self.keys, words[hit], "right")
                for array, row, offset in self.owners[first[hit]:last]:
                    image, start = self.images[array][row], position - int(offset)
                    if start >= 0 and data[start:start + len(image)] == image.tobytes():
                        form, task = self.labels[array]
                        yield Finding(name, task, int(row), form, start)


def _key_pixels(pixels: np.ndarray, width: int, chunk: int = 4096) -> np.ndarray:
    """Per image (N, D), the first of the `width` consecutive pixels with the most nonzero and changing
    values: a run of zeros (an image's empty border) would match everywhere in a file."""
    offsets = []
    for start in range(0, len(pixels), chunk):
        rows = pixels[start:start + chunk].astype(np.int16)
        score = (rows != 0).astype(np.int32)
        score[:, 1:] += rows[:, 1:] != rows[:, :-1]  # (c, D): nonzero, and differs from the pixel before
        total = np.concatenate([np.zeros((len(rows), 1), np.int32), score.cumsum(1, dtype=np.int32)], 1)
        offsets.append((total[:, width:] - total[:, :-width]).argmax(1))  # (c, D - width + 1)
    return np.concatenate(offsets)


def _keys(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The KEY bytes of each row (N, L) at its byte offset, as one uint64 each."""
    window = rows[np.arange(len(rows))[:, None], offsets[:, None] + np.arange(KEY)]  # (N, KEY)
    return np.ascontiguousarray(window).view("<u8").ravel()


def audit_folder(folder: Path, needles: Needles) -> FileAudit:
    """Search every file under `folder`, and every member of a zip archive among them."""
    audit = FileAudit()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        data = path.read_bytes()
        audit.files += 1
        audit.bytes += len(data)
        audit.findings += needles.find(data, name)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    audit.findings += needles.find(archive.read(member), f"{name}!{member}")
        if path.suffix == ".json":
            audit.findings += _find_in_json(data, name, needles)
    return audit


def _find_in_json(data: bytes, name: str, needles: Needles) -> Iterator[Finding]:
    """Images written as JSON numbers (e.g. a model's input example): each numeric array, read as uint8
    pixels (integers 0..255, or multiples of 1/255 in [0, 1]), is searched like a file; the offset is the
    index of the image's first number in the array."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return
    for values in _numeric_arrays(document):
        for scale in (1.0, 255.0):
            pixels = values * scale
            if pixels.min() >= 0 and pixels.max() <= 255 and np.allclose(pixels, np.round(pixels), atol=1e-4):
                for found in needles.find(np.round(pixels).astype(np.uint8).tobytes(), name):
                    if found.form == "uint8":
                        yield dataclasses.replace(found, form="JSON numbers")


def _numeric_arrays(node: object) -> Iterator[np.ndarray]:
    """Every maximal (nested) list of numbers in a JSON document, flattened."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _numeric_arrays(value)
    elif isinstance(node, list) and node:
        try:
            values = np.asarray(node, dtype=np.float64).ravel()
        except (ValueError, TypeError):
            for value in node:
                yield from _numeric_arrays(value)
        else:
            yield values


def audit_chain_files(chain: str, tasks: Sequence[Task]) -> FileAudit:
    """Download every file the chain stored and search them for every training image of `tasks`."""
    with tempfile.TemporaryDirectory(prefix="dgr-audit-") as tmp:
        registry.download_chain_files(chain, Path(tmp))
        return audit_folder(Path(tmp), Needles(tasks))


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parser("Search every file a chain stored in MLflow for its training images.",
                      "YAML config of the chain (default configs/split_mnist.yaml)").parse_args(argv)
    try:
        cli.check_outputs(args)
        config, pipeline = load_settings(args.config, args.set)
        tasks = build_stream(config.stream, resolve_data_root(args.data_root), config.run.seed)
        tracking.configure_tracking(args.workdir, create=False)  # reads a chain's store, never makes one
        name = pipeline.chain_name(config)
        result = audit_chain_files(name, tasks)
    except cli.BAD_INPUT as exc:
        return cli.failed(exc, 2)
    images = sum(len(t.train_x) for t in tasks)
    print(f"{name}: searched {result.files} files ({result.bytes / 2**20:.1f} MiB) for {images} training images "
          f"as uint8 and float32 pixels: {len(result.findings)} found")
    for f in result.findings:
        print(f"  {f.file} at byte {f.offset}: training image {f.image} of task {f.task} ({f.form})")
    print(f"real training data the {config.replay.arm} arm keeps: {REAL_DATA[config.replay.arm]}")
    if args.json is not None:
        cli.write_json(args.json, {"chain": name, "files": result.files, "bytes": result.bytes,
                                   "findings": [asdict(f) for f in result.findings]})
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
