"""Start an MLflow tracking server for a team: a database store for runs and the registry, artifacts proxied
to a local directory or S3, bound to loopback unless told otherwise.

    python infra/mlflow_server.py                                   # sqlite + local artifacts in ./mlflow-server
    MLFLOW_BACKEND_STORE_URI=postgresql://user@db/mlflow python infra/mlflow_server.py \\
        --artifacts-destination s3://dgr/mlflow --host 0.0.0.0

Secrets never go on a command line (shell history, `ps`): the database password comes from the database's
own password file (PGPASSFILE / ~/.pgpass, a MySQL option file) or from MLFLOW_BACKEND_STORE_URI in the
environment, which is handed to `mlflow server` through its environment too. With S3 artifacts the server
(not the clients) needs MLFLOW_S3_ENDPOINT_URL (for a non-AWS endpoint) and AWS credentials (environment,
~/.aws/credentials or an instance role): it inherits this process's. Messages show URIs with the password
masked. A server bound beyond loopback gets a warning: MLflow's server has no authentication of its own.
It prints the MLFLOW_TRACKING_URI to export and stays in the foreground; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python infra/mlflow_server.py` from a checkout
from infra.ports import bindable_port  # noqa: E402

# SQLAlchemy dialects may carry a driver: postgresql+psycopg2://, mysql+pymysql://.
BACKEND_SCHEMES = ("sqlite", "postgresql", "mysql", "file")
HEALTH_TIMEOUT_S = 60.0
BACKEND_STORE_ENV = "MLFLOW_BACKEND_STORE_URI"  # read by `mlflow server` itself, as by this helper
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServerError(RuntimeError):
    """The server could not be started; the message is one line meant for the user."""


def default_backend_store_uri() -> str:
    return f"sqlite:///{Path('mlflow-server').resolve() / 'mlflow.db'}"


def default_artifacts_destination() -> str:
    return str(Path("mlflow-server").resolve() / "artifacts")


def masked(uri: str) -> str:
    """The URI as a message may show it: a password in its user part becomes ***."""
    try:
        parts = urlparse(uri)
        password = parts.password
    except ValueError:
        return uri
    if not password:
        return uri
    return parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}").geturl()


def check_backend_store_uri(uri: str) -> None:
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in BACKEND_SCHEMES:
        raise ServerError(f"backend store URI {masked(uri)!r}: scheme must be one of {', '.join(BACKEND_SCHEMES)} "
                          f"(e.g. sqlite:///ABSOLUTE/PATH/mlflow.db)")


def exposure_warning(host: str) -> str | None:
    """A warning for a server reachable from other machines, None on loopback."""
    if host in LOOPBACK:
        return None
    return (f"warning: the MLflow server listens on {host}, beyond this machine, and MLflow's server has no "
            "authentication of its own: put it behind an authenticating proxy or a private network")


def _prepare_local_paths(backend_store_uri: str, artifacts_destination: str) -> str:
    """Create the sqlite file's folder and a local artifact folder; return the artifact destination,
    made absolute when it is a local path (the server's working directory must not matter)."""
    if backend_store_uri.startswith("sqlite:///"):
        Path(backend_store_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if "://" in artifacts_destination:
        return artifacts_destination
    local = Path(artifacts_destination).resolve()
    local.mkdir(parents=True, exist_ok=True)
    return str(local)


def _bind_port(host: str, port: int) -> int:
    """Check that `port` can be bound on `host` (0: find a free one); return the port."""
    try:
        return bindable_port(host, port)
    except OSError as err:
        raise ServerError(str(err)) from None


def _client_host(host: str) -> str:
    """The address a client uses: loopback for a server on all interfaces is only right on this machine."""
    if host == "0.0.0.0":
        return socket.gethostbyname(socket.gethostname())
    return host


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"mlflow server exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise ServerError(f"mlflow server did not answer {url} within {timeout_s:.0f} s")


def start_mlflow_server(
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    allowed_hosts: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = HEALTH_TIMEOUT_S,
) -> tuple[subprocess.Popen, str]:
    """Start `mlflow server` (same interpreter) and wait for /health; return the process and tracking URI.

    `port=0` picks a free port. `env` is added to this process's environment for the server (S3 settings).
    The server runs in its own process group so that `stop` ends it and every worker it spawned.
    """
    backend_store_uri = backend_store_uri or default_backend_store_uri()
    check_backend_store_uri(backend_store_uri)
    port = _bind_port(host, port)
    destination = _prepare_local_paths(backend_store_uri, artifacts_destination or default_artifacts_destination())
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--artifacts-destination", destination,
        "--serve-artifacts",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    # MLflow's job runner (GenAI jobs, seven huey processes) is off unless the environment turns it on:
    # the pipeline never uses it, and on a small machine it slows start and stop.
    # The backend store URI travels in the environment, not in argv: it may hold the database password.
    server_env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, **(env or {}),
                  BACKEND_STORE_ENV: backend_store_uri}
    proc = subprocess.Popen(command, env=server_env, start_new_session=True)
    probe_host = "127.0.0.1" if host == "0.0.0.0" else host
    try:
        _wait_healthy(proc, f"http://{probe_host}:{port}/health", timeout_s)
    except BaseException:  # also Ctrl-C while waiting: never leave a half-started server behind
        stop(proc)
        raise
    return proc, f"http://{_client_host(host)}:{port}"


def stop(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop the server's process group: the server and every process it spawned (uvicorn, job runners).

    SIGTERM first; after `timeout_s`, or as soon as the server itself has exited, SIGKILL whatever of the
    group is left, so that no worker outlives it.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend-store-uri", default=os.environ.get(BACKEND_STORE_ENV),
                        help="sqlite:///ABS/PATH.db, postgresql://user@host/db, mysql://... (default: "
                             f"${BACKEND_STORE_ENV}, else ./mlflow-server/mlflow.db); no password here: "
                             "use the database's password file or the environment variable")
    parser.add_argument("--artifacts-destination", default=None,
                        help="local folder or s3://bucket/prefix (default: ./mlflow-server/artifacts)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 exposes the server")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--allowed-hosts", default=None, help="passed to mlflow server (Host header check)")
    return parser.parse_args(argv)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    uri = args.backend_store_uri or ""
    if masked(uri) != uri and uri != os.environ.get(BACKEND_STORE_ENV):
        print(f"warning: --backend-store-uri holds a password, which shell history and `ps` show: give it in "
              f"${BACKEND_STORE_ENV} or the database's password file", file=sys.stderr, flush=True)
    if warning := exposure_warning(args.host):
        print(warning, file=sys.stderr, flush=True)
    # The server has its own process group, so Ctrl-C or a SIGTERM reaches only us: forward both.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    proc = None
    try:
        proc, uri = start_mlflow_server(args.backend_store_uri, args.artifacts_destination, args.host,
                                        args.port, args.workers, args.allowed_hosts)
        print(f"export MLFLOW_TRACKING_URI={uri}", flush=True)
        return proc.wait()
    except ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while starting, start_mlflow_server has already stopped the server
        if proc is None:
            return 130
        stop(proc)
        return 0


if __name__ == "__main__":
    sys.exit(main())
