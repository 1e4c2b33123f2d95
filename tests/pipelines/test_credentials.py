"""Secrets stay out of what the driver hands Ray: the workers' runtime env (Ray's metadata, its dashboard)
and the train loop's settings; URIs in messages show no password."""

from __future__ import annotations

import json

import pytest

from pipelines.cluster import WorkerPlan
from pipelines.credentials import masked, shared_settings
from pipelines.trainer import chain_trainer

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIA-secret-id", "AWS_SECRET_ACCESS_KEY": "secret-access-key",
    "AWS_SESSION_TOKEN": "secret-session-token", "MLFLOW_TRACKING_PASSWORD": "secret-password",
    "MLFLOW_TRACKING_TOKEN": "secret-token", "MLFLOW_TRACKING_USERNAME": "secret-user",
}
SETTINGS = {"MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "eu-west-1",
            "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}


@pytest.fixture
def driver_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**SECRETS, **SETTINGS}.items():
        monkeypatch.setenv(key, value)


def test_workers_get_the_settings_and_no_secret(driver_env: None) -> None:
    assert shared_settings() == SETTINGS


def test_a_tracking_uri_with_a_password_is_not_passed_on(driver_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://dgr:secret-in-uri@mlflow.internal")
    assert "MLFLOW_TRACKING_URI" not in shared_settings()
    assert masked("https://dgr:secret-in-uri@mlflow.internal/x?y=1") == "https://dgr:***@mlflow.internal/x?y=1"
    assert masked("http://mlflow.internal:5000") == "http://mlflow.internal:5000"


def test_the_trainer_hands_ray_no_secret(driver_env: None, tmp_path) -> None:
    settings = {"tracking_uri": SETTINGS["MLFLOW_TRACKING_URI"], "chain": "tiny-chain"}
    trainer = chain_trainer(settings, WorkerPlan(1, 1, 1.0, 0.0), 0, "tiny-chain-0", str(tmp_path))
    handed = json.dumps([trainer.run_config.worker_runtime_env, trainer.train_loop_config], default=str)
    assert not [value for value in SECRETS.values() if value in handed]
    assert trainer.run_config.worker_runtime_env == {"env_vars": SETTINGS}
