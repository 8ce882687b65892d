"""A real S3-API server (moto) on loopback for the object-store tests; the client is not mocked.

`point_environment()` (conftest.py, before Ray starts, so that Ray workers inherit it) picks a
free port on 127.0.0.1 and points the AWS_* variables at it; `s3_store` (a session fixture)
starts the server there and creates a bucket. `S3Store.url(name)` is an `s3://bucket/name`
prefix.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Iterator

BUCKET = "zoos"
ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass(frozen=True)
class S3Store:
    """The running server: its endpoint and bucket."""

    endpoint: str
    bucket: str

    def url(self, name: str) -> str:
        """`s3://bucket/name`, a prefix of the test's own."""
        return f"s3://{self.bucket}/{name}"

    def keys(self, name: str) -> list[str]:
        """Every key under the prefix `name`/, relative to it, sorted."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                Prefix=f"{name}/")
        return sorted(item["Key"][len(name) + 1:] for page in pages
                      for item in page.get("Contents", []))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def point_environment() -> None:
    """Point the AWS_* variables at a free loopback port (the server is not started yet)."""
    os.environ.update(ENVIRONMENT, AWS_ENDPOINT_URL=f"http://127.0.0.1:{_free_port()}")


def serve() -> Iterator[S3Store]:
    """Start the server where the environment points, create the bucket; stop it after."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    port = int(endpoint.rsplit(":", 1)[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield S3Store(endpoint, BUCKET)
    finally:
        server.stop()
