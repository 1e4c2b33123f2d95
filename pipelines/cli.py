"""What the two commands (`dgr-sequence`, `dgr-sweep`) share: their common arguments, the check of the
paths they write to, SIGTERM taken as Ctrl-C, and how a failure ends them: one `error:` line on stderr
and a non-zero exit (2 for bad input, see `BAD_INPUT`; 130 when interrupted)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from dgr.checkpoint import CheckpointError
from dgr.config import Config, ConfigError, set_but_unread
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


def check_outputs(args: argparse.Namespace) -> None:
    """`--json` and `--workdir` checked before anything runs: they are used only after a whole chain or
    sweep trained (`--json`) or after Ray started (`--workdir`), too late to fail on a wrong path."""
    if args.json is not None:
        _check_target(args.json, "--json", directory=False)
    _check_target(args.workdir, "--workdir", directory=True)


def _check_target(path: Path, flag: str, directory: bool) -> None:
    """`path` is (or can be made, missing folders and all) a directory or a file we may write."""
    kind = "a directory" if directory else "a file"
    if path.exists() and path.is_dir() != directory:
        raise ConfigError(f"{flag} {path}: expected {kind}, found {'a file' if directory else 'a directory'}")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir() and existing != path:
        raise ConfigError(f"{flag} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable")


def note_unread(config: Config) -> None:
    """A `note:` line on stderr for each key the config sets that this run never reads (`generator.latent`
    under ER, say): not an error, since one config serves every arm, but not silently ignored either."""
    for note in set_but_unread(config).values():
        print(f"note: {note}", file=sys.stderr, flush=True)


def write_json(path: Path, values: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=1, default=str))


def failed(exc: BaseException, status: int) -> int:
    """Print `exc` as one `error:` line (a Ray error's own text spans many) and return `status`."""
    print(f"error: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
    return status


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (`ray job stop`, `kill`, `docker stop`) ends a command as Ctrl-C does: Python's default runs
    no cleanup and would leave its MLflow runs RUNNING; an interrupt ends them KILLED. Enter it before Ray
    starts: `pipelines.cluster.join_ray` keeps this handler where `ray.init` installs its own."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
