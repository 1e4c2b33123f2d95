"""Scholar files: `spec.json` (the architecture) and `weights.pt` (a state dict of tensors only).

Loading never unpickles arbitrary objects (`torch.load(weights_only=True)`). Writing goes to a staging
folder; an existing scholar is renamed aside (`.<name>.old`), the new one renamed in, and only then the
old one deleted. A crash between the renames leaves the previous scholar aside, complete: `load_scholar`
reads it while `<name>` is missing, and the next `save_scholar` removes it once the new one is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from dgr.scholar import Scholar, scholar_from_spec

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.pt"


class CheckpointError(Exception):
    """A scholar folder is missing, incomplete or corrupt; the message names the file."""


def _aside(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.old"


def save_scholar(scholar: Scholar, folder: str | os.PathLike[str]) -> Path:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (staging / SPEC_FILE).write_text(json.dumps(scholar.spec, indent=1, sort_keys=True))
        state = {k: v.detach().cpu() for k, v in scholar.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        aside = _aside(folder)
        if folder.exists():
            shutil.rmtree(aside, ignore_errors=True)  # a stale copy: the scholar in `folder` is newer
            folder.rename(aside)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return folder


def load_scholar(folder: str | os.PathLike[str], device: torch.device | str = "cpu",
                 origin: str | None = None) -> Scholar:
    """The scholar saved in `folder`. Errors name `origin` (e.g. the model URI it was downloaded from)
    instead of the folder when given."""
    folder = Path(folder)
    if not folder.exists() and _aside(folder).is_dir():  # a save was interrupted between its renames
        folder = _aside(folder)
    spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE

    def named(path: Path) -> str:
        return str(path) if origin is None else f"{path.name} of {origin}"

    for path in (spec_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"scholar checkpoint incomplete: {named(path)} is missing")
    try:
        spec = json.loads(spec_path.read_text())
        scholar = scholar_from_spec(spec)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"corrupt scholar spec {named(spec_path)}: {_one_line(exc)}") from None
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        scholar.load_state_dict(state)
    except Exception as exc:  # unpickling, zip and shape errors all mean the same thing to the user
        reason = f"not a state dict of this architecture ({type(exc).__name__})"
        raise CheckpointError(f"corrupt scholar weights {named(weights_path)}: {reason}") from None
    return scholar.to(device)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
