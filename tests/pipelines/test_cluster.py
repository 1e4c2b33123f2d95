"""The main job against real services on loopback: S3 artifacts (moto) and `ray job submit` to `ray start`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from mlflow.tracking import MlflowClient

from infra.s3_endpoint import create_bucket, environment, s3_client, start_s3_endpoint
from pipelines.sequence import main
from tests.pipelines.conftest import chain_args, tiny_sweep_sets

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_artifacts_and_ray_run_state_land_on_s3(
        fake_data_root: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    server, endpoint = start_s3_endpoint()
    try:
        create_bucket(endpoint, "dgr")
        for key, value in environment(endpoint).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("DGR_ARTIFACT_LOCATION", "s3://dgr/mlflow")
        ray.init(address="local", num_cpus=2, configure_logging=False)
        try:
            args = chain_args(fake_data_root, workdir, "stream.num_tasks=2", "pipeline.storage_path=s3://dgr/ray")
            assert main(args) == 0
        finally:
            ray.shutdown()
        keys = [o["Key"] for o in s3_client(endpoint).list_objects_v2(Bucket="dgr").get("Contents", [])]
        assert sum(k.startswith("mlflow/") and k.endswith("scholar/weights.pt") for k in keys) == 2
        # Ray Train keeps its run state there and no scholar: the registry is the chain's checkpoint.
        assert any(k.startswith("ray/") for k in keys)
        assert not any(k.startswith("ray/") and k.endswith(".pt") for k in keys)
        assert len(MlflowClient().search_model_versions("name='tiny-chain'")) == 2
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`ray start --head --block` on loopback in its own process group, stopped by this test only."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for key in [k for k in env if k == "RAY_ADDRESS" or k.startswith(("MLFLOW_", "DGR_"))]:
        env.pop(key)  # the job uses the embedded default in its --workdir, nothing inherited
    dashboard, port = _free_port(), _free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats"],
        env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        # A trivial job, not `ray job list`: the dashboard answers before its job agent takes jobs
        # ("No available agent to submit job", seen on a loaded machine).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            probe = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
                                    "--", "python", "-c", "pass"], env=env, capture_output=True, timeout=120)
            if probe.returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail("ray start --head did not take a job within 180 s")
        yield address, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        _forget_cluster_address(f"127.0.0.1:{port}")


def _forget_cluster_address(address: str) -> None:
    """`ray start` records its address for later `ray.init()` calls; drop it once that head is gone."""
    from ray._common.utils import get_ray_address_file

    record = Path(get_ray_address_file(None))
    if record.exists() and record.read_text().strip() == address:
        record.unlink()


def _submit(address: str, env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
                           "--working-dir", str(REPO), "--", "python", *command],
                          env=env, capture_output=True, text=True, timeout=600)


def test_ray_job_submit_runs_the_chain_and_a_sweep(ray_head: tuple[str, dict[str, str]], fake_data_root: Path,
                                                   tmp_path: Path) -> None:
    address, env = ray_head
    job = _submit(address, env, "pipelines/sequence.py", *chain_args(fake_data_root, tmp_path, "stream.num_tasks=2"))
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "average accuracy" in job.stdout
    assert (tmp_path / "result.json").exists()

    # The sweep joins the same cluster: two trials of one worker (0.99 CPU) at once on its 2 CPUs.
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    config = sweep_dir / "sweep.yaml"
    config.write_text("sweep:\n  samples: 1\n  space:\n    solver.lr: {grid: [0.01, 0.003]}\n")
    args = ["--config", str(config), "--data-root", str(fake_data_root), "--workdir", str(sweep_dir),
            "--name", "submitted-sweep", "--json", str(sweep_dir / "sweep.json")]
    args += tiny_sweep_sets("stream.num_tasks=2", "pipeline.num_workers=1", "replay.arm=none")
    job = _submit(address, env, "pipelines/sweep.py", *args)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(summary["trials"]) == 2 and summary["best"]["finished"]
    assert "best: trial" in job.stdout
