"""What the benchmarks that time the main job in fresh processes share: those processes' environment."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def checkout_env(**extra: str) -> dict[str, str]:
    """This process's environment with this checkout first on PYTHONPATH (a child process, and the Ray
    workers it starts, import this checkout's code), plus `extra` variables."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}
