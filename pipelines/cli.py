"""What the two commands (`dgr-sequence`, `dgr-sweep`) share: their common arguments and how a failure
ends them: one `error:` line on stderr and a non-zero exit (2 for bad input, see `BAD_INPUT`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dgr.checkpoint import CheckpointError
from dgr.config import ConfigError
from dgr.datasets import DatasetError
from pipelines.tracking import RegistryError

BAD_INPUT = (ConfigError, DatasetError, CheckpointError, RegistryError)  # config, data, files, registry state


def parser(description: str, config_help: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", type=Path, default=None, help=config_help)
    p.add_argument("--data-root", default=None, help="datasets root (default $DGR_DATA_ROOT or ./data)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--workdir", type=Path, default=Path.cwd(), help="embedded MLflow store and Ray run state")
    return p


def failed(exc: BaseException, status: int) -> int:
    """Print `exc` as one `error:` line (a Ray error's own text spans many) and return `status`."""
    print(f"error: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
    return status
