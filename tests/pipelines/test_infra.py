"""infra/: the Ray cluster config passes Ray's own validation; the local S3 endpoint and the MLflow server
start on loopback, store what they are given, and stop."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.mlflow_server import ServerError, exposure_warning, masked, start_mlflow_server, stop
from infra.s3_endpoint import create_bucket, environment, s3_client, start_s3_endpoint

REPO = Path(__file__).resolve().parents[2]


def load_cluster_config() -> dict:
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def validate_cluster_config(config: dict) -> dict:
    """What `ray up` does before touching the cloud: merge the provider's defaults, then check the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def test_ray_cluster_config_passes_ray_validation():
    prepared = validate_cluster_config(load_cluster_config())
    assert prepared["cluster_name"] == "dgr"
    assert prepared["provider"]["type"] == "aws"
    gpu_types = [t for t in prepared["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    # One GPU node stays up: `pipeline.use_gpu: auto` decides from the nodes that are up when a job starts.
    assert len(gpu_types) == 1 and gpu_types[0]["min_workers"] >= 1 and gpu_types[0]["max_workers"] >= 1
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0  # the driver's node: no GPU, so auto must not ask the driver


def test_ray_validation_rejects_an_unknown_key():
    """Guards the test above: the validator is strict, so passing it means something."""
    config = load_cluster_config()
    config["available_node_types"]["head"]["gpus"] = 1
    with pytest.raises(Exception, match="gpus"):
        validate_cluster_config(config)


def test_ray_auth_mode_is_the_same_for_head_and_workers():
    config = load_cluster_config()
    modes = {
        key: re.findall(r"RAY_AUTH_MODE=(\w+)", " ".join(config[key]))
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
    }
    assert all(len(found) == 1 for found in modes.values()), modes
    assert modes["head_start_ray_commands"] == modes["worker_start_ray_commands"]
    if modes["head_start_ray_commands"] == ["token"]:
        assert "~/.ray/auth_token" in config["file_mounts"]


def test_torch_is_installed_pinned_before_the_project():
    commands = load_cluster_config()["setup_commands"]
    torch_at = next(i for i, c in enumerate(commands) if "torch==2.13.0" in c)
    project_at = next(i for i, c in enumerate(commands) if "install -q -e ~/dgr" in c)
    assert torch_at < project_at


@pytest.fixture
def s3_endpoint():
    server, endpoint = start_s3_endpoint(port=0)
    yield endpoint
    server.stop()


def test_s3_endpoint_round_trips_an_object(s3_endpoint):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", s3_endpoint) and not s3_endpoint.endswith(":0")
    create_bucket(s3_endpoint, "dgr")
    s3 = s3_client(s3_endpoint)
    s3.put_object(Bucket="dgr", Key="a/b.txt", Body=b"replay")
    assert s3.get_object(Bucket="dgr", Key="a/b.txt")["Body"].read() == b"replay"


def test_s3_endpoint_environment_is_all_ray_storage_needs(s3_endpoint, monkeypatch):
    """`pipeline.storage_path=s3://...` goes through pyarrow's S3 filesystem, which reads AWS_ENDPOINT_URL
    (not MLFLOW_S3_ENDPOINT_URL); without it pyarrow asks AWS where the bucket is."""
    from pyarrow import fs

    create_bucket(s3_endpoint, "dgr")
    for key in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment(s3_endpoint).items():
        monkeypatch.setenv(key, value)
    filesystem, path = fs.FileSystem.from_uri("s3://dgr/ray/state.txt")
    with filesystem.open_output_stream(path) as stream:
        stream.write(b"replay")
    assert s3_client(s3_endpoint).get_object(Bucket="dgr", Key="ray/state.txt")["Body"].read() == b"replay"


def test_s3_endpoint_refuses_a_busy_port(s3_endpoint):
    with pytest.raises(OSError, match="not free"):
        start_s3_endpoint(port=int(s3_endpoint.rsplit(":", 1)[1]))


def test_bad_backend_store_uri_is_refused_before_starting():
    with pytest.raises(ServerError, match="scheme"):
        start_mlflow_server(backend_store_uri="redis://localhost/0", port=0)


def test_busy_port_is_refused_before_starting(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(ServerError, match="cannot bind"):
            start_mlflow_server(backend_store_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                artifacts_destination=str(tmp_path / "artifacts"), port=listener.getsockname()[1])


def test_cli_exits_with_one_line_error_for_a_bad_backend_store_uri(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "infra" / "mlflow_server.py"), "--backend-store-uri", "mlflow.db",
         "--port", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "mlflow-server").exists()


def test_a_password_in_a_bad_backend_store_uri_is_masked_and_warned_about(tmp_path):
    uri = "redis://dgr:s3cr3t-pw@db.example/0"
    result = subprocess.run([sys.executable, str(REPO / "infra" / "mlflow_server.py"), "--backend-store-uri", uri,
                             "--port", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "s3cr3t-pw" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert "holds a password" in lines[0] and "MLFLOW_BACKEND_STORE_URI" in lines[0]
    assert lines[-1] == "error: backend store URI 'redis://dgr:***@db.example/0': scheme must be one of sqlite, " \
        "postgresql, mysql, file (e.g. sqlite:///ABSOLUTE/PATH/mlflow.db)"


def test_only_a_server_beyond_loopback_is_warned_about():
    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    assert "no authentication" in exposure_warning("0.0.0.0")
    assert masked("postgresql+psycopg2://dgr:pw@db:5432/mlflow") == "postgresql+psycopg2://dgr:***@db:5432/mlflow"
    assert masked("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


@pytest.mark.mlflow
@pytest.mark.slow
def test_mlflow_server_stores_artifacts_in_s3(tmp_path, s3_endpoint, monkeypatch):
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    create_bucket(s3_endpoint, "dgr")
    proc, uri = start_mlflow_server(
        backend_store_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifacts_destination="s3://dgr/mlflow",
        port=0,
        env=environment(s3_endpoint),
    )
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", uri)
        # The backend store URI (a password's place) reaches the server in its environment, not its argv.
        assert "mlflow.db" not in Path(f"/proc/{proc.pid}/cmdline").read_text()
        # The client holds no S3 settings: artifacts must travel through the server (proxied).
        for key in environment(s3_endpoint):
            monkeypatch.delenv(key, raising=False)
        # set_tracking_uri writes a module global and the environment: both are restored after the test.
        monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        mlflow.set_tracking_uri(uri)
        (tmp_path / "note.txt").write_text("generative replay")
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(tmp_path / "note.txt"))
        keys = [o["Key"] for o in s3_client(s3_endpoint).list_objects_v2(Bucket="dgr").get("Contents", [])]
        assert any(k.startswith("mlflow/") and k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys
    finally:
        stop(proc)
    assert proc.returncode is not None
