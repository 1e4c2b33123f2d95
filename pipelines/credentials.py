"""Credentials stay where their owner put them: each process's own environment, an instance role, or a
credentials file (`~/.aws/credentials`, `~/.mlflow/credentials`). The driver hands Ray only settings that
are not secret, so none reaches Ray's runtime env (kept in its metadata, shown by its dashboard), an
MLflow param or tag, or a log line; a URI in a message is shown with its password masked.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

# Where the workers find the registry and S3: names, addresses and paths, never keys, tokens or passwords
# (MLFLOW_TRACKING_URI only without a password in it).
SHARED_SETTINGS = (
    "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_S3_IGNORE_TLS", "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
    "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
)


def has_password(uri: str) -> bool:
    try:
        return bool(urlsplit(uri).password)
    except ValueError:  # not a URI with a network location: nothing to hide
        return False


def masked(uri: str) -> str:
    """`uri` with the password of its user part replaced by ***: scheme://user:***@host/..."""
    if not has_password(uri):
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def shared_settings() -> dict[str, str]:
    """The driver's settings that the workers may be given (Ray's runtime env)."""
    return {k: v for k in SHARED_SETTINGS if (v := os.environ.get(k)) and not has_password(v)}
