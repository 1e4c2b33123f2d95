"""The science layer never imports the adapters' dependencies (ray, mlflow, boto3, yaml), and its `gpu`
tests collect where only torch is (a GPU machine's image: `benchmarks/gpu_session.sh`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "mlflow", "boto3", "yaml")

# Runs first in a fresh interpreter: a finder that refuses the blocked packages.
BLOCKER = """
import importlib, json, pkgutil, sys

BLOCKED = {blocked!r}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is blocked here")
        return None

sys.meta_path.insert(0, Blocker())
"""
# `dgr` and every `dgr.*` module are imported. Prints what was imported and what was left in sys.modules.
SCRIPT = BLOCKER + """
import dgr
names = ["dgr"] + [f"dgr.{{m.name}}" for m in pkgutil.iter_modules(dgr.__path__)]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({{"imported": names, "leaked": leaked}}))
"""


@pytest.fixture(scope="module")
def blocked_import() -> dict[str, list[str]]:
    done = _blocked_run(SCRIPT, BLOCKED)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _blocked_run(script: str, blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script.format(blocked=blocked)], cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_every_dgr_module_imports_without_adapter_packages(blocked_import: dict[str, list[str]]) -> None:
    expected = {"dgr.config", "dgr.streams", "dgr.scenario", "dgr.targets", "dgr.solvers",
                "dgr.generators", "dgr.scholar", "dgr.replay", "dgr.training", "dgr.evaluation",
                "dgr.sequence", "dgr.vision", "dgr.datasets"}
    assert expected <= set(blocked_import["imported"])


def test_no_adapter_package_is_loaded_after_importing_dgr(blocked_import: dict[str, list[str]]) -> None:
    assert blocked_import["leaked"] == []


def test_the_gpu_tests_collect_where_only_torch_is() -> None:
    """Without the adapters' packages, pyarrow or scipy, `pytest -m gpu tests/dgr` still finds the CUDA
    tests: pytest imports every module of the folder before it filters by marker."""
    collect = BLOCKER + """
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--collect-only", "-m", "gpu", "tests/dgr"]))
"""
    done = _blocked_run(collect, (*BLOCKED, "pyarrow", "scipy"))
    assert done.returncode == 0, done.stdout[-2000:]
    assert "tests/dgr/test_cuda.py::" in done.stdout and "tests/dgr/test_ddp.py::" in done.stdout
