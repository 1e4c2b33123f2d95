"""The main job as users start it (`python -m pipelines.sequence`, defaults): each worker progress line
reaches the driver's output once, the driver prints the time left, one worker reproduces the core
single-process runner's numbers exactly, and SIGTERM ends it cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from dgr.sequence import run_sequence
from dgr.streams import build_stream
from pipelines.settings import load_settings
from tests.pipelines.conftest import TINY_CHAIN, chain_args

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]
AUTO_WORKERS = "pipeline.num_workers=auto"


def test_the_default_job_logs_each_line_once_and_matches_the_core_runner(
        fake_data_root: Path, workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    job = subprocess.run([sys.executable, "-m", "pipelines.sequence",
                          *chain_args(fake_data_root, workdir, AUTO_WORKERS)],
                         cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stderr[-3000:]
    output = (job.stdout + job.stderr).splitlines()
    for task in range(3):
        progress = [line for line in output if re.search(rf"\btask {task} iteration 30/30 ", line)]
        assert len(progress) == 1, progress
    # Ray Train's own line per report (the metrics dict again) and the local Ray's preemption watcher's
    # error line at start are not shown
    assert not [line for line in output if "Reporting training result" in line or "PreemptionWatcher" in line]
    left = [line for line in job.stdout.splitlines() if re.fullmatch(r"tiny-chain: \d/3 tasks, about .* left", line)]
    assert len(left) == 3 and "\r" not in job.stdout  # plain lines: no terminal attached

    result = json.loads((workdir / "result.json").read_text())
    assert result["workers"]["num_workers"] == 1  # auto on a machine without GPUs
    assert result["workers"]["threads"] == result["workers"]["cpus"]  # every CPU of this node
    config, _ = load_settings(None, [*TINY_CHAIN, AUTO_WORKERS])
    threads = torch.get_num_threads()
    torch.set_num_threads(result["workers"]["threads"])
    try:
        core = run_sequence(config, build_stream(config.stream, fake_data_root, config.run.seed))
    finally:
        torch.set_num_threads(threads)
    assert result["accuracy_matrix"] == core.accuracy_matrix


def test_sigterm_ends_the_job_as_ctrl_c_does(fake_data_root: Path, workdir: Path) -> None:
    """`ray job stop` and `kill` send SIGTERM: the driver ends its runs KILLED (not RUNNING, as when Ray's
    own handler aborted it) and exits 130 with one line saying how to resume."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    args = chain_args(fake_data_root, workdir, "solver.iterations=600", "generator.iterations=600",
                      "pipeline.log_every=100")
    job = subprocess.Popen([sys.executable, "-m", "pipelines.sequence", *args], cwd=workdir, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in job.stdout:  # the workers are training task 0
            lines.append(line)
            if re.search(r"\btask 0 iteration 100/600 ", line):
                break
        job.send_signal(signal.SIGTERM)
        output = "".join(lines) + job.stdout.read()
        assert job.wait(timeout=300) == 130, output[-3000:]
    finally:
        job.kill()
    assert "error: interrupted; rerun the same command to resume after the last registered task" in output
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/mlflow.db"  # the workdir fixture forgets it
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("dgr").experiment_id])
    assert runs and {run.info.status for run in runs} == {"KILLED"}
    assert not client.search_model_versions("name='tiny-chain'")
