"""The commands users type: the `[project.scripts]` entry points, `python -m pipelines.X`, and the script
paths that `ray job submit --working-dir .` runs (the working dir first on PYTHONPATH, as Ray sets it)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_entry_points_name_the_command_line_mains() -> None:
    assert set(SCRIPTS) == {"dgr-sequence", "dgr-sweep"}
    for target in SCRIPTS.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name))


@pytest.mark.parametrize("command", [["-m", "pipelines.sequence"], ["-m", "pipelines.sweep"],
                                     ["pipelines/sequence.py"], ["pipelines/sweep.py"]])
def test_each_form_of_the_commands_starts(command: list[str], tmp_path) -> None:
    """From the checkout, with only the checkout on PYTHONPATH (no sys.path edits in the code)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cwd = REPO if command[0].endswith(".py") else tmp_path
    done = subprocess.run([sys.executable, *command, "--help"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--config" in done.stdout
