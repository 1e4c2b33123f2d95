"""A local S3 endpoint (moto's server) for development and tests, bound to loopback only.

    python infra/s3_endpoint.py --port 9000 --bucket dgr

starts it, creates the bucket, prints the environment to export, and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
import threading

import boto3
from moto.server import ThreadedMotoServer
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python infra/s3_endpoint.py` from a checkout
from infra.ports import bindable_port  # noqa: E402

HOST = "127.0.0.1"
# moto accepts any credentials; clients still need some to sign requests.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _check_port_free(port: int) -> None:
    """Raise OSError if `port` is taken: moto's server would otherwise hang in `start()`."""
    if port != 0:
        bindable_port(HOST, port)


def start_s3_endpoint(port: int = 0) -> tuple[ThreadedMotoServer, str]:
    """Start moto's S3 server in a thread on 127.0.0.1:`port` (0: any free port); return it and its URL."""
    _check_port_free(port)
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    host, real_port = server.get_host_and_port()
    return server, f"http://{host}:{real_port}"


def s3_client(endpoint: str):
    """A boto3 S3 client for `endpoint` with the dummy credentials."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def create_bucket(endpoint: str, bucket: str) -> None:
    s3_client(endpoint).create_bucket(Bucket=bucket)


def environment(endpoint: str) -> dict[str, str]:
    """What an MLflow server (proxied artifacts) or client (direct) needs to reach this endpoint: MLflow
    reads MLFLOW_S3_ENDPOINT_URL; pyarrow's S3 filesystem (Ray's `pipeline.storage_path`) and boto3 read
    AWS_ENDPOINT_URL."""
    return {"MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL": endpoint, **CREDENTIALS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--bucket", default="dgr")
    args = parser.parse_args(argv)
    try:
        server, endpoint = start_s3_endpoint(args.port)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        create_bucket(endpoint, args.bucket)
        print(f"# S3 endpoint on {endpoint}, bucket s3://{args.bucket}; export:")
        for key, value in environment(endpoint).items():
            print(f"export {key}={value}")
        print("# Ctrl-C stops it (its data lives in memory and is lost).", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
