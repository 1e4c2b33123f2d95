"""The science layer never imports the adapters' dependencies (ray, mlflow, boto3, yaml)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "mlflow", "boto3", "yaml")

# Runs in a fresh interpreter: a finder installed before any import refuses the blocked packages, then
# `dgr` and every `dgr.*` module are imported. Prints what was imported and what was left in sys.modules.
SCRIPT = """
import importlib, json, pkgutil, sys

BLOCKED = {blocked!r}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in dgr")
        return None

sys.meta_path.insert(0, Blocker())
import dgr
names = ["dgr"] + [f"dgr.{{m.name}}" for m in pkgutil.iter_modules(dgr.__path__)]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({{"imported": names, "leaked": leaked}}))
"""


@pytest.fixture(scope="module")
def blocked_import() -> dict[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(blocked=BLOCKED)], cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_dgr_module_imports_without_adapter_packages(blocked_import: dict[str, list[str]]) -> None:
    expected = {"dgr.config", "dgr.streams", "dgr.scenario", "dgr.targets", "dgr.solvers",
                "dgr.generators", "dgr.scholar", "dgr.replay", "dgr.training", "dgr.evaluation",
                "dgr.sequence", "dgr.vision", "dgr.datasets"}
    assert expected <= set(blocked_import["imported"])


def test_no_adapter_package_is_loaded_after_importing_dgr(blocked_import: dict[str, list[str]]) -> None:
    assert blocked_import["leaked"] == []
