"""Scholar files: `spec.json` (the architecture) and `weights.pt` (a state dict of tensors only).

Loading never unpickles arbitrary objects (`torch.load(weights_only=True)`). Writing goes to a temporary
folder that is renamed into place, so a crash leaves either the old checkpoint or the new one.
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


def save_scholar(scholar: Scholar, folder: str | os.PathLike[str]) -> Path:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (staging / SPEC_FILE).write_text(json.dumps(scholar.spec, indent=1, sort_keys=True))
        state = {k: v.detach().cpu() for k, v in scholar.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def load_scholar(folder: str | os.PathLike[str], device: torch.device | str = "cpu") -> Scholar:
    folder = Path(folder)
    spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE
    for path in (spec_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"scholar checkpoint incomplete: {path} is missing")
    try:
        spec = json.loads(spec_path.read_text())
        scholar = scholar_from_spec(spec)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"corrupt scholar spec {spec_path}: {_one_line(exc)}") from None
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        scholar.load_state_dict(state)
    except Exception as exc:  # unpickling, zip and shape errors all mean the same thing to the user
        reason = f"not a state dict of this architecture ({type(exc).__name__})"
        raise CheckpointError(f"corrupt scholar weights {weights_path}: {reason}") from None
    return scholar.to(device)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
