"""The example configs of `configs/` as the core reads them: the sections only the pipeline commands read
(`pipeline`, `sweep`) are left out."""

from __future__ import annotations

from dgr.config import Config, from_dict
from tests.conftest import REPO


def example_config(name: str) -> Config:
    import yaml  # lazily: a GPU machine's image has torch alone, and its tests still collect

    values = yaml.safe_load((REPO / "configs" / name).read_text())
    return from_dict({section: inner for section, inner in values.items() if section not in ("pipeline", "sweep")})
