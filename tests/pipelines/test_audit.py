"""The privacy audit in the pipeline: tags and metrics per version, and no training image in a GR chain's files.

The chains here are trained by the core and registered by the driver's own `_register_task`, in process
(no Ray): the files and tags are the ones a chain writes, at a fraction of a Ray chain's start-up.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dgr.config import config_hash
from dgr.privacy import audit_generator
from dgr.sequence import TaskEvaluated, run_sequence
from dgr.streams import Task, build_stream
from dgr.training import Progress
from pipelines import audit, registry, tracking
from pipelines.chain import Chain, ChainResult, _register_task
from pipelines.settings import load_settings
from tests.conftest import make_tiny_stream, tiny_config
from tests.pipelines.conftest import TINY_CHAIN

TASKS = make_tiny_stream(2)


def _train_and_register(arm: str, workdir: Path, name: str | None = None) -> str:
    config = tiny_config(replay={"arm": arm})
    experiment = tracking.ensure_experiment("dgr", workdir)
    name, digest = name or f"audit-{arm}", config_hash(config)
    chain = Chain(config, TASKS, name, digest, experiment, tracking.start_chain_run(name, experiment, config, digest),
                  ChainResult(name, [], [], 0.0))

    def register(event: Progress | TaskEvaluated) -> None:
        if isinstance(event, TaskEvaluated):
            task = TASKS[event.task]
            run_id = tracking.start_task_run(chain.run_id, experiment, name, config, digest, task.info)
            _register_task(chain, task, run_id, event.scholar, {"train_seconds": event.training.seconds})

    run_sequence(config, TASKS, callback=register)
    return name


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One store holding a GR chain and an ER chain of two tasks each."""
    folder = tmp_path_factory.mktemp("audit")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(folder)
        tracking.configure_tracking(folder)
        for arm in ("gr", "er"):
            _train_and_register(arm, folder)
        yield folder
        mlflow.set_tracking_uri(None)  # also unsets the variable set_tracking_uri exported


def _versions(chain: str) -> list:
    return sorted(MlflowClient().search_model_versions(f"name = '{chain}'"), key=lambda v: int(v.version))


@pytest.mark.mlflow
def test_each_gr_version_carries_its_memorisation_audit(store: Path) -> None:
    client = MlflowClient()
    for k, version in enumerate(_versions("audit-gr")):
        tags = version.tags
        assert 0 < float(tags["privacy.nn_ratio"]) and 0 < float(tags["privacy.copy_ratio"])
        assert 0 <= float(tags["privacy.near_copy_fraction"]) <= 1
        assert float(tags["privacy.threshold"]) > 0 and tags["privacy.generator"] == "vae"
        assert tags["privacy.real_data"].startswith("none kept")
        history = client.get_metric_history(version.run_id, "privacy.nn_ratio")
        assert [(m.step, f"{m.value:.4f}") for m in history] == [(k, tags["privacy.nn_ratio"])]


@pytest.mark.mlflow
def test_a_scholar_whose_audit_fails_is_not_registered(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def audit_once(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("audit of task 1 broke")
        return audit_generator(*args, **kwargs)

    monkeypatch.setattr(audit, "audit_generator", audit_once)
    with pytest.raises(RuntimeError, match="audit of task 1 broke"):
        _train_and_register("gr", store, name="audit-broken")
    [version] = _versions("audit-broken")  # task 0 only: a rerun resumes at task 1 and audits it
    assert version.tags["task"] == "0" and float(version.tags["privacy.nn_ratio"]) > 0
    assert MlflowClient().get_registered_model("audit-broken").aliases == {"task-0": version.version}


@pytest.mark.mlflow
def test_er_versions_say_they_hold_real_data_by_design(store: Path) -> None:
    for version in _versions("audit-er"):
        assert version.tags["privacy.generator"] == "none"
        assert "by design" in version.tags["privacy.real_data"]
        assert "privacy.nn_ratio" not in version.tags
    result = audit.audit_chain_files("audit-er", TASKS)
    assert result.clean and result.files >= 2 * 3  # per task: the scholar in its run and in its version


@pytest.mark.mlflow
def test_a_gr_chain_stores_no_training_image_and_a_planted_one_is_found(store: Path) -> None:
    result = audit.audit_chain_files("audit-gr", TASKS)
    names = {Path(f).name for f in _downloaded_names("audit-gr", store / "downloaded")}
    assert {"weights.pt", "spec.json", "samples.png", "accuracy_matrix.png"} <= names
    assert result.clean and result.bytes > 0

    image = TASKS[1].train_x[5]
    as_float = (image.float() / 255).numpy().astype(np.float32).tobytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner/tensor", b"\x01" * 3 + as_float)
    planted = store / "planted"
    planted.mkdir()
    (planted / "notes.bin").write_bytes(b"header" + image.numpy().tobytes() + b"trailer")
    (planted / "bundle.zip").write_bytes(archive.getvalue())
    run_id = _versions("audit-gr")[0].run_id
    MlflowClient().log_artifacts(run_id, str(planted), "planted")

    found = {(Path(f.file.split("!")[0]).name, f.task, f.image, f.form, f.offset)
             for f in audit.audit_chain_files("audit-gr", TASKS).findings}
    assert found == {("notes.bin", 1, 5, "uint8", 6), ("bundle.zip", 1, 5, "float32", 3)}


def _downloaded_names(chain: str, tmp: Path) -> list[str]:
    """Every file the audit reads: the runs' artifacts and the registered versions' (MLflow Model) files."""
    registry.download_chain_files(chain, tmp)
    return [str(path.relative_to(tmp)) for path in tmp.rglob("*") if path.is_file()]


@pytest.mark.parametrize("shift", range(9))
def test_an_image_is_found_at_any_byte_offset_and_only_when_whole(tmp_path: Path, shift: int) -> None:
    tasks = make_tiny_stream(1)
    image = tasks[0].train_x[3].numpy().tobytes()
    (tmp_path / "whole").write_bytes(bytes(range(shift)) + image)
    (tmp_path / "cut").write_bytes(bytes(range(shift)) + image[:-1])
    needles = audit.Needles(tasks)
    found = [(f.file, f.image, f.offset) for f in audit.audit_folder(tmp_path, needles).findings]
    assert found == [("whole", 3, shift)]


def test_an_image_written_as_json_numbers_is_found(tmp_path: Path) -> None:
    task = make_tiny_stream(1)[0]
    pixels = task.train_x[4].float() / 255  # (1, 8, 8), as an input example would hold it
    example = {"inputs": [task.test_x[0].float().div(255).tolist(), pixels.tolist()], "name": ["a", 1]}
    (tmp_path / "input_example.json").write_text(json.dumps(example))
    found = [(f.file, f.image, f.form, f.offset) for f in audit.audit_folder(tmp_path, audit.Needles([task])).findings]
    assert found == [("input_example.json", 4, "JSON numbers", 64)]


def test_no_training_image_is_found_in_other_images_of_the_same_distribution(tmp_path: Path) -> None:
    task: Task = make_tiny_stream(1)[0]
    (tmp_path / "test_images").write_bytes(task.test_x.numpy().tobytes())
    assert audit.audit_folder(tmp_path, audit.Needles([task])).clean


@pytest.mark.mlflow
def test_the_command_names_a_planted_image_and_exits_1(store: Path, fake_data_root: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    sets = [arg for item in TINY_CHAIN for arg in ("--set", item)] + ["--set", "pipeline.name=audit-cli"]
    args = ["--data-root", str(fake_data_root), "--workdir", str(store), *sets]
    assert audit.main(args) == 2
    assert capsys.readouterr().err.strip() == (f"error: chain audit-cli: no runs and no registered versions in the "
                                               f"store {mlflow.get_tracking_uri()}; check pipeline.name and "
                                               "MLFLOW_TRACKING_URI")
    config, _ = load_settings(None, TINY_CHAIN)
    image = build_stream(config.stream, fake_data_root, config.run.seed)[2].train_x[7]
    client = MlflowClient()
    run_id = client.create_run(client.get_experiment_by_name("dgr").experiment_id,
                               tags={"dgr.chain": "audit-cli"}).info.run_id
    (store / "copy.bin").write_bytes(image.numpy().tobytes())
    client.log_artifact(run_id, str(store / "copy.bin"))
    assert audit.main(args + ["--json", str(store / "audit.json")]) == 1
    out = capsys.readouterr().out
    assert "audit-cli: searched 1 files" in out and "copy.bin at byte 0: training image 7 of task 2 (uint8)" in out
    assert json.loads((store / "audit.json").read_text())["findings"][0]["image"] == 7


def test_the_command_on_a_folder_without_a_store_makes_none(
        fake_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty = tmp_path / "not-a-workdir"
    args = ["--data-root", str(fake_data_root), "--workdir", str(empty), *[a for i in TINY_CHAIN for a in ("--set", i)]]
    assert audit.main(args) == 2
    assert capsys.readouterr().err.strip() == (f"error: --workdir {empty.resolve()}: no MLflow store (mlflow.db) "
                                               "there; give the main job's --workdir or set MLFLOW_TRACKING_URI")
    assert list(tmp_path.iterdir()) == []
