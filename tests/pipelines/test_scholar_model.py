"""A registered scholar as an MLflow Model: `mlflow.pyfunc.load_model(...).predict` gives the accuracies
the chain reported for that version, in every scenario, and `mlflow models serve` answers on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from dgr.config import config_hash, from_flat
from dgr.scenario import Scenario, target
from dgr.scholar import new_scholar
from dgr.streams import Task, build_stream
from pipelines import chain as chain_module
from pipelines import tracking

pytestmark = pytest.mark.mlflow
NAME = "tiny-model"
SERVE_TIMEOUT_S = 300  # a guard against a server that never starts, not a benchmark


def _register_last_task(data_root: Path, workdir: Path, store: Path, scenario: str) -> chain_module.Chain:
    """Version task-1 of a 2-task split MNIST, registered by the driver's own `_register_task` (an
    untrained scholar: what matters is that the model's predictions match the chain's evaluation)."""
    config = from_flat({"stream.name": "split", "stream.sources": ("mnist",), "stream.classes_per_task": 5,
                        "stream.scenario": scenario, "stream.test_samples": 100,
                        "solver.hidden": 16, "generator.hidden": 16, "generator.latent": 4})
    tasks = build_stream(config.stream, data_root, config.run.seed)
    shutil.copy(store, workdir / "mlflow.db")
    tracking.configure_tracking(workdir)
    experiment = tracking.ensure_experiment(chain_module.EXPERIMENT, workdir)
    digest = config_hash(config)
    run_id = tracking.start_chain_run(NAME, experiment, config, digest)
    chain = chain_module.Chain(config, tasks, NAME, digest, experiment, run_id,
                               chain_module.ChainResult(NAME, [], [], 0.0))
    scholar = new_scholar(config, tasks[0].input_shape, 10 if scenario != "domain" else 5)
    task_run = tracking.start_task_run(run_id, experiment, NAME, config, digest, tasks[1].info)
    chain_module._register_task(chain, tasks[1], task_run, scholar.eval(), {})
    return chain


def _images(task: Task) -> np.ndarray:
    return task.test_x.float().div(255).numpy()  # (N, C, H, W) float32 in [0, 1]


@pytest.mark.parametrize("scenario", ["class", "domain", "task"])
def test_the_loaded_model_predicts_with_the_accuracy_the_chain_reported(
        fake_data_root: Path, workdir: Path, empty_store: Path, scenario: str) -> None:
    chain = _register_last_task(fake_data_root, workdir, empty_store, scenario)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@task-1")
    reported = chain.result.accuracy_matrix[0]  # the row of task 1, the only one registered
    for task in chain.tasks:
        out = model.predict(_images(task), params={"task": task.index})
        expected = target(Scenario(scenario), task.test_y, task.info).numpy()
        assert float(np.mean(out["predicted_class"] == expected)) == reported[task.index]
        assert out["scores"].shape == (len(expected), model.metadata.signature.outputs.inputs[1].shape[1])
        assert np.allclose(out["scores"].sum(1), 1.0, atol=1e-5)
        assert np.array_equal(out["scores"].argmax(1), out["predicted_class"])
    images = _images(chain.tasks[0])
    if scenario == "task":  # the head must be named: a guess would score another task's classes
        with pytest.raises(MlflowException, match="params task"):
            model.predict(images)
    else:  # the default is the version's last task, as the chain evaluated it
        default, named = model.predict(images), model.predict(images, params={"task": 1})
        assert np.array_equal(default["predicted_class"], named["predicted_class"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _wait_until_up(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read() if server.stdout else "server exited"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    pytest.fail(f"mlflow models serve did not answer {url} within {SERVE_TIMEOUT_S} s")


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_models_predictions(
        fake_data_root: Path, workdir: Path, empty_store: Path) -> None:
    chain = _register_last_task(fake_data_root, workdir, empty_store, "class")
    uri = f"models:/{NAME}@task-1"
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}  # its uvicorn
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_until_up(server, f"http://127.0.0.1:{port}/ping")
        images = _images(chain.tasks[1])[:8]
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": images.tolist()})["predictions"]
        expected = mlflow.pyfunc.load_model(uri).predict(images)
        assert answer["predicted_class"] == expected["predicted_class"].tolist()
        assert np.allclose(answer["scores"], expected["scores"], atol=1e-6)
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    """End the server and its uvicorn worker (its own process group), whatever the test's outcome."""
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
