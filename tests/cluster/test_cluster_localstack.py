"""The launcher the cluster tests and benchmarks stand on: a clear error without PostgreSQL's binaries,
and an S3 endpoint that refuses connections while blocked, keeps its objects, and is gone once stopped."""

from __future__ import annotations

import httpx
import pytest

from framepack_server import localstack
from framepack_server.localstack import LocalStackError, MotoS3


def test_missing_postgres_binaries_say_how_to_install_them(monkeypatch):
    monkeypatch.setattr(localstack.glob, "glob", lambda _pattern: [])
    monkeypatch.setattr(localstack.shutil, "which", lambda _name: None)
    with pytest.raises(LocalStackError, match="apt-get install postgresql"):
        localstack.Postgres()


@pytest.mark.slow
def test_s3_endpoint_blocked_then_back_with_its_objects_then_stopped(tmp_path):
    s3 = MotoS3(log_path=tmp_path / "moto.log").start()
    try:
        s3.create_bucket("gate-test")
        s3.client().put_object(Bucket="gate-test", Key="a", Body=b"kept")
        s3.block()
        with pytest.raises(httpx.ConnectError):
            httpx.get(s3.endpoint_url, timeout=2)
        s3.unblock()
        assert s3.client().get_object(Bucket="gate-test", Key="a")["Body"].read() == b"kept"
    finally:
        s3.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(s3.endpoint_url, timeout=2)
