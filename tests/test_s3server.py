"""The loopback S3 server the object-store tests use: real requests, one bucket, loopback only."""

from __future__ import annotations

import os


def test_the_server_stores_and_lists_objects_through_a_real_client(s3_store):
    import boto3

    assert s3_store.endpoint.startswith("http://127.0.0.1:")
    assert os.environ["AWS_ENDPOINT_URL"] == s3_store.endpoint
    client = boto3.client("s3")  # endpoint and credentials from the environment alone
    client.put_object(Bucket=s3_store.bucket, Key="probe/a/b.bin", Body=b"\x00\x01")
    assert client.get_object(Bucket=s3_store.bucket, Key="probe/a/b.bin")["Body"].read() \
        == b"\x00\x01"
    assert s3_store.keys("probe") == ["a/b.bin"]
