"""Scholar files: saved and loaded back exactly, and replaced so that an interruption at any step
leaves a loadable scholar."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dgr import checkpoint
from dgr.checkpoint import CheckpointError, load_scholar, save_scholar
from dgr.config import from_flat
from dgr.scholar import Scholar, new_scholar

CONFIG = from_flat({"solver.hidden": 16, "generator.hidden": 16, "generator.latent": 4})


def _scholar(seed: int) -> Scholar:
    return new_scholar(from_flat({"run.seed": seed}, CONFIG), (1, 8, 8), 4)


def _same(a: Scholar, b: Scholar) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_saved_scholar_loads_back_exactly(tmp_path: Path) -> None:
    saved = _scholar(0)
    assert _same(load_scholar(save_scholar(saved, tmp_path / "scholar")), saved)


def test_replacing_a_scholar_leaves_only_the_new_one(tmp_path: Path) -> None:
    folder = tmp_path / "scholar"
    save_scholar(_scholar(0), folder)
    save_scholar(_scholar(1), folder)
    assert _same(load_scholar(folder), _scholar(1))
    assert [p.name for p in tmp_path.iterdir()] == ["scholar"]  # no staging or old copy left


def test_an_interruption_before_the_new_scholar_is_renamed_in_leaves_the_old_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "scholar"
    save_scholar(_scholar(0), folder)
    rename = Path.rename

    def interrupted(self: Path, target: Path) -> Path:
        if not self.name.endswith(".old") and Path(target) == folder:  # the staging folder moving in
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_scholar(_scholar(1), folder)
    monkeypatch.undo()
    assert not folder.exists()  # the old scholar was moved aside, the new one never arrived
    assert _same(load_scholar(folder), _scholar(0))
    save_scholar(_scholar(2), folder)  # the next save completes and cleans up
    assert _same(load_scholar(folder), _scholar(2))
    assert [p.name for p in tmp_path.iterdir()] == ["scholar"]


def test_an_interruption_before_the_old_scholar_is_deleted_leaves_the_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "scholar"
    save_scholar(_scholar(0), folder)
    rmtree = shutil.rmtree

    def interrupted(path: Path, ignore_errors: bool = False) -> None:
        if Path(path).exists():  # the old scholar, once the new one is in place
            raise KeyboardInterrupt
        rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_scholar(_scholar(1), folder)
    monkeypatch.undo()
    assert _same(load_scholar(folder), _scholar(1))
    save_scholar(_scholar(2), folder)
    assert _same(load_scholar(folder), _scholar(2))
    assert [p.name for p in tmp_path.iterdir()] == ["scholar"]


def test_errors_name_the_origin_instead_of_the_folder(tmp_path: Path) -> None:
    folder = save_scholar(_scholar(0), tmp_path / "scholar")
    (folder / "weights.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=str(folder / "weights.pt")):
        load_scholar(folder)
    with pytest.raises(CheckpointError) as error:
        load_scholar(folder, origin="models:/c@task-0")
    assert "weights.pt of models:/c@task-0" in str(error.value) and str(tmp_path) not in str(error.value)
    shutil.rmtree(folder)
    with pytest.raises(CheckpointError, match="spec.json of models:/c@task-0 is missing"):
        load_scholar(folder, origin="models:/c@task-0")
