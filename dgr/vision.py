"""The one place that imports torchvision.

The registry's torchvision 0.28.0 wheel is a CUDA build. With the CPU torch its compiled ops do not
load, and `import torchvision` fails while registering fake kernels for `torchvision::nms`. Defining
the two op schemas first lets the pure-Python parts (datasets, transforms, utils) import; the compiled
ops (`torchvision.ops`, `torchvision.io`) stay unusable, so nothing in dgr relies on them.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None


def _define_missing_schemas() -> None:
    global _library
    missing = [name for name in _SCHEMAS if not _has_op(name)]
    if not missing:
        return
    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _library.define(_SCHEMAS[name])


def _has_op(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def import_torchvision() -> ModuleType:
    """Import torchvision so that its datasets, transforms and utils work with any torch build."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError:
        # The failed import left half-initialised submodules behind; drop them before retrying.
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _define_missing_schemas()
        return importlib.import_module("torchvision")
