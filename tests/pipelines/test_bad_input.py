"""Bad inputs to the main job: a one-line error, a non-zero exit, and no version registered."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from mlflow.tracking import MlflowClient

from dgr.config import config_hash
from dgr.scholar import new_scholar
from dgr.streams import TaskInfo, build_stream
from pipelines import cli, registry, tracking
from pipelines.chain import fingerprint
from pipelines.sequence import main
from pipelines.settings import load_settings
from pipelines.sweep import main as sweep_main
from tests.pipelines.conftest import TINY_CHAIN, chain_args, stored_scholar_file

pytestmark = pytest.mark.mlflow


def _error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    return errors[0]


def _version_count(chain: str = "tiny-chain") -> int:
    return len(MlflowClient().search_model_versions(f"name='{chain}'"))


def test_settings_the_run_never_reads_are_noted_not_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """One config serves every arm; what this arm ignores is said before the run starts (here the data
    root is missing, so it stops right after)."""
    args = chain_args(tmp_path / "no-data", tmp_path, "replay.arm=er", "generator.latent=32")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    notes = [line for line in err if line.startswith("note: ")]
    assert notes == err[:len(notes)] and err[-1].startswith("error: ")  # before the run, in one line each
    assert {note.split("=")[0] for note in notes} == {"note: generator.hidden", "note: generator.latent",
                                                      "note: generator.iterations"}  # the tiny chain's and ours
    assert "note: generator.latent=32 is not read: replay.arm=er trains no generator" in notes


@pytest.mark.parametrize("override, named", [
    ("solver.bogus=1", "solver.bogus"),
    ("replay.ratio=1.5", "replay.ratio"),
    ("replay.ratio=0", "replay.ratio"),
    ("generator.latent=-3", "generator.latent"),
    ("pipeline.num_workers=0", "pipeline.num_workers"),
    ("pipeline.colour=red", "pipeline.colour"),
    ("pipeline.num_workers=many", "pipeline.num_workers"),
    ("pipeline.gpus_per_worker=1.5", "pipeline.gpus_per_worker"),
    ("pipeline.log_every=0", "pipeline.log_every"),
    ("pipeline.log_every=auto", "pipeline.log_every"),
    ("pipeline.run_ahead=yes", "pipeline.run_ahead"),
    ("solver.lr=inf", "solver.lr"),
    ("generator.lr=inf", "generator.lr"),
    ("replay.temperature=inf", "replay.temperature"),
    ("generator.gradient_penalty=inf", "generator.gradient_penalty"),
    ("pipeline.worker_cpus=nan", "pipeline.worker_cpus"),
    ("pipeline.worker_cpus=inf", "pipeline.worker_cpus"),
    ("run.seed=99999999999999999999", "run.seed"),
    ("pipeline.name=a'b", "pipeline.name"),
    ("pipeline.name=-x", "pipeline.name"),
    ("pipeline.name=café", "pipeline.name"),
    ("pipeline.name=a#b", "pipeline.name"),
    ("pipeline.name=" + "x" * 300, "pipeline.name"),
])
def test_bad_config_values_fail_with_their_dotted_name(
        override: str, named: str, fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(chain_args(fake_data_root, workdir, override)) == 2
    assert named in _error(capsys)
    assert not (workdir / "mlflow.db").exists()  # nothing was started or written


def test_a_batch_that_does_not_split_evenly_across_workers_fails_at_config_time(
        fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(chain_args(fake_data_root, workdir, "pipeline.num_workers=3")) == 2  # batch 32
    message = _error(capsys)
    assert "solver.batch_size" in message and "pipeline.num_workers" in message
    assert not (workdir / "mlflow.db").exists()  # nothing started, nothing registered


def test_unknown_key_in_a_config_file_is_named(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    config = workdir / "bad.yaml"
    config.write_text("stream:\n  name: split_mnist\nreplay:\n  ratoi: 0.5\n")
    assert main(["--config", str(config)]) == 2
    assert "replay.ratoi" in _error(capsys)


def test_unreadable_yaml_names_the_file(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    config = workdir / "broken.yaml"
    config.write_text("stream: [unclosed\n")
    assert main(["--config", str(config)]) == 2
    assert str(config) in _error(capsys)


@pytest.mark.parametrize("command", [main, sweep_main])
@pytest.mark.parametrize("text, section", [
    ("pipeline: 5\n", "pipeline"), ("pipeline: [a, b]\n", "pipeline"), ("pipeline: abc\n", "pipeline"),
    ("sweep: 5\n", "sweep"), ("replay: 0.5\n", "replay"),
])
def test_a_section_that_is_not_a_mapping_is_named(
        command, text: str, section: str, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    config = workdir / "bad.yaml"
    config.write_text(text)
    assert command(["--config", str(config), "--set", "replay.ratio=0.5"]) == 2
    assert _error(capsys).startswith(f"error: {section}: expected a mapping of keys to values, got ")
    assert not (workdir / "mlflow.db").exists()


def test_an_unknown_section_lists_the_pipeline_sections(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    config = workdir / "bad.yaml"
    config.write_text("pipline:\n  num_workers: 2\n")
    assert main(["--config", str(config)]) == 2
    assert _error(capsys) == ("error: pipline: unknown config section "
                              "(allowed: stream, solver, generator, replay, run, pipeline, sweep)")


def test_a_config_that_is_not_text_names_the_file(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    config = workdir / "figure.png"
    config.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    assert main(["--config", str(config)]) == 2
    assert _error(capsys) == f"error: {config}: not a text file (expected a UTF-8 YAML config)"


@pytest.mark.parametrize("command", [main, sweep_main])
@pytest.mark.parametrize("flag, target, expected", [
    ("--json", "folder", "--json {}: expected a file, found a directory"),
    ("--json", "file/result.json", "--json {}: {workdir}/file is not a directory"),
    ("--workdir", "file", "--workdir {}: expected a directory, found a file"),
    ("--workdir", "file/store", "--workdir {}: {workdir}/file is not a directory"),
])
def test_output_paths_are_checked_before_anything_runs(
        command, flag: str, target: str, expected: str, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    (workdir / "folder").mkdir()
    (workdir / "file").write_text("")
    path = workdir / target
    assert command([flag, str(path)]) == 2
    assert _error(capsys) == "error: " + expected.format(path, workdir=workdir)
    assert sorted(p.name for p in workdir.iterdir()) == ["file", "folder"]  # nothing written


def test_json_results_go_into_folders_made_for_them(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "results.json"
    cli.check_outputs(cli.parser("", "").parse_args(["--json", str(path), "--workdir", str(tmp_path)]))
    cli.write_json(path, {"accuracy": 0.5})
    assert path.read_text() == '{\n "accuracy": 0.5\n}'


def test_missing_data_names_the_expected_path(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    empty = workdir / "no-data"
    empty.mkdir()
    assert main(chain_args(empty, workdir)) == 2
    assert str(empty / "MNIST" / "raw") in _error(capsys)


def test_unreachable_tracking_server_fails_fast(
        fake_data_root: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert main(chain_args(fake_data_root, workdir)) == 2
    assert "unreachable" in _error(capsys)


def _register_task0(workdir: Path, digest: str, data_fingerprint: str = "fp") -> None:
    """A version for task 0 of the tiny chain, registered as a previous run would have."""
    config, _ = load_settings(None, TINY_CHAIN)
    tracking.configure_tracking(workdir)
    experiment = tracking.ensure_experiment("dgr", workdir)
    parent = tracking.start_chain_run("tiny-chain", experiment, config, digest)
    task = TaskInfo(0, "permuted mnist 0", tuple(range(10)))
    run = tracking.start_task_run(parent, experiment, "tiny-chain", config, digest, task)
    facts = registry.VersionFacts((task,), "permuted_mnist", "domain", "gr", digest, data_fingerprint, [0.5], None)
    registry.register_scholar("tiny-chain", run, new_scholar(config, (1, 28, 28), 10), facts)


def test_registry_of_another_config_refuses_to_resume(
        fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    _register_task0(workdir, "0123456789ab")
    assert main(chain_args(fake_data_root, workdir)) == 2
    message = _error(capsys)
    assert "0123456789ab" in message and "--restart" in message
    assert _version_count() == 1


def _task0_fingerprint(data_root: Path) -> str:
    config, _ = load_settings(None, TINY_CHAIN)
    return fingerprint(build_stream(config.stream, data_root, config.run.seed)[0])


def test_a_chain_trained_on_other_data_refuses_to_resume(
        fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    config, _ = load_settings(None, TINY_CHAIN)
    _register_task0(workdir, config_hash(config), "0123456789abcdef")
    assert main(chain_args(fake_data_root, workdir)) == 2
    message = _error(capsys)
    assert "0123456789abcdef" in message and _task0_fingerprint(fake_data_root) in message and "--restart" in message
    assert _version_count() == 1


def test_corrupt_registered_checkpoint_fails_before_training_naming_the_model(
        fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    config, _ = load_settings(None, TINY_CHAIN)
    _register_task0(workdir, config_hash(config), _task0_fingerprint(fake_data_root))
    stored_scholar_file("tiny-chain", 0, "weights.pt").write_bytes(b"not a torch file")
    assert main(chain_args(fake_data_root, workdir)) == 2
    assert _error(capsys).startswith("error: corrupt scholar weights weights.pt of models:/tiny-chain@task-0:")
    assert _version_count() == 1


def test_an_unsupported_tracking_uri_scheme_fails_in_one_line(
        fake_data_root: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://x")
    assert main(chain_args(fake_data_root, workdir)) == 2
    message = _error(capsys)
    assert message.startswith("error: MLflow tracking URI ftp://x:") and "unsupported URI" in message


@pytest.mark.parametrize("uri, named", [
    ("http://localhost:abc", "nonnumeric port"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("sqlite://rel.db", "Invalid SQLite URL"),
])
def test_a_malformed_tracking_uri_fails_in_one_line(uri: str, named: str, fake_data_root: Path, workdir: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(chain_args(fake_data_root, workdir)) == 2
    message = _error(capsys)
    assert uri in message and named in message
    assert list(workdir.iterdir()) == []


def test_a_conv_generator_on_sides_it_cannot_rebuild_fails_before_anything_starts(
        fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(chain_args(fake_data_root, workdir, "stream.name=permuted", "stream.sources=mnist",
                           "stream.image_size=30", "generator.kind=conv-vae", "generator.channels=4")) == 2
    assert _error(capsys).startswith("error: generator.kind: conv-vae needs (C, H, W) inputs with H and W divisible")
    assert not (workdir / "mlflow.db").exists()


@pytest.fixture
def own_ray() -> Iterator[None]:
    """The main job starts its own local Ray, as from the command line; stopped after, so that later tests
    (a `ray start` cluster's dashboard, a simulated cluster) find none in this process."""
    import ray

    ray.shutdown()
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_a_diverged_task_is_not_registered(
        own_ray: None, fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(chain_args(fake_data_root, workdir, "stream.num_tasks=2", "solver.lr=1e20")) == 1
    assert _error(capsys) == "error: task 0: the solver loss is nan after training (diverged); lower solver.lr"
    assert _version_count() == 0
    runs = MlflowClient().search_runs([tracking.ensure_experiment("dgr", workdir)])
    assert runs and all(run.info.status == "FAILED" for run in runs)


@pytest.mark.ray
@pytest.mark.slow
def test_workers_the_local_ray_cannot_hold_fail_instead_of_waiting(
        own_ray: None, fake_data_root: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(chain_args(fake_data_root, workdir, "pipeline.num_workers=1", "pipeline.threads_per_worker=64")) == 2
    assert _error(capsys).startswith("error: pipeline.threads_per_worker: 1 worker(s) holding 64 CPU each do not fit")
    assert _version_count() == 0 and not MlflowClient().search_runs([tracking.ensure_experiment("dgr", workdir)])
