"""S3Storage against moto's S3 server on 127.0.0.1: round trips, misses, presigned URLs, outages."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

pytest.importorskip("moto.server")
from moto.server import ThreadedMotoServer  # noqa: E402

from framepack_server.storage import Storage  # noqa: E402
from framepack_server.storage.s3 import S3Storage, StorageUnavailable  # noqa: E402

BUCKET = "framepack-test"
REGION = "us-east-1"
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def _fake_aws_env(mp: pytest.MonkeyPatch) -> None:
    for name, value in _ENV.items():
        mp.setenv(name, value)
    for name in _UNSET:
        mp.delenv(name, raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            _fake_aws_env(mp)
            boto3.client("s3", endpoint_url=url, region_name=REGION).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_aws_env(monkeypatch)


@pytest.fixture
def store(endpoint: str, aws_env: None) -> S3Storage:
    # A fresh prefix per test keeps tests independent while sharing one bucket.
    return S3Storage(BUCKET, f"runs/{uuid.uuid4().hex}", endpoint_url=endpoint, region=REGION)


def raw_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


def test_is_a_storage(store: S3Storage) -> None:
    assert isinstance(store, Storage)


def test_bytes_round_trip_under_prefix(store: S3Storage, endpoint: str) -> None:
    store.put_bytes("outputs/job1.mp4", b"video", content_type="video/mp4")
    assert store.exists("outputs/job1.mp4")
    assert store.get_bytes("outputs/job1.mp4") == b"video"
    assert store.size("outputs/job1.mp4") == 5
    assert store.local_path("outputs/job1.mp4") is None
    head = raw_client(endpoint).head_object(Bucket=BUCKET, Key=f"{store.prefix}/outputs/job1.mp4")
    assert head["ContentType"] == "video/mp4"


def test_put_bytes_replaces(store: S3Storage) -> None:
    store.put_bytes("a.txt", b"one")
    store.put_bytes("a.txt", b"second")
    assert store.get_bytes("a.txt") == b"second"
    assert store.size("a.txt") == 6


def test_file_round_trip(store: S3Storage, endpoint: str, tmp_path: Path) -> None:
    src = tmp_path / "clip.mp4"
    payload = bytes(range(256)) * 4096  # 1 MiB
    src.write_bytes(payload)
    store.put_file("outputs/clip.mp4", src, content_type="video/mp4")
    assert src.read_bytes() == payload  # the source is left in place
    assert store.get_bytes("outputs/clip.mp4") == payload
    assert store.size("outputs/clip.mp4") == len(payload)
    head = raw_client(endpoint).head_object(Bucket=BUCKET, Key=f"{store.prefix}/outputs/clip.mp4")
    assert head["ContentType"] == "video/mp4"


def test_put_file_missing_source(store: S3Storage, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.put_file("x.bin", tmp_path / "nope.bin")
    assert not store.exists("x.bin")


def test_no_prefix_stores_key_as_is(endpoint: str, aws_env: None) -> None:
    bare = S3Storage(BUCKET, endpoint_url=endpoint, region=REGION)
    key = f"bare-{uuid.uuid4().hex}.txt"
    bare.put_bytes(key, b"hi")
    assert raw_client(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"hi"
    bare.delete(key)


def test_missing_key(store: S3Storage) -> None:
    with pytest.raises(FileNotFoundError, match="nothing/here"):
        store.get_bytes("nothing/here")
    assert store.exists("nothing/here") is False
    assert store.size("nothing/here") is None


def test_delete_twice(store: S3Storage) -> None:
    store.put_bytes("d.txt", b"x")
    store.delete("d.txt")
    assert not store.exists("d.txt")
    store.delete("d.txt")  # missing is fine
    store.delete("never-was.txt")


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/", "../up", "a/./b", "a\\b", "nul\x00"])
def test_invalid_keys_refused(store: S3Storage, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.get_bytes(key)
    with pytest.raises(ValueError):
        store.exists(key)
    with pytest.raises(ValueError):
        store.presigned_url(key, 60)


def test_presigned_url_downloads(store: S3Storage) -> None:
    store.put_bytes("outputs/v.mp4", b"moving pictures", content_type="video/mp4")
    url = store.presigned_url("outputs/v.mp4", 60)
    assert url.startswith(f"{store.endpoint_url}/{BUCKET}/{store.prefix}/outputs/v.mp4?")
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"moving pictures"


def test_presigned_url_carries_its_expiry(store: S3Storage) -> None:
    started = datetime.now(UTC).replace(microsecond=0)
    query = parse_qs(urlsplit(store.presigned_url("outputs/v.mp4", 1)).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["1"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert started <= signed_at <= datetime.now(UTC) + timedelta(seconds=1)


# Expiry itself is not tested here: moto 5.2.5's S3 server does not enforce X-Amz-Expires (real S3 answers
# 403); the URL's expiry parameters are checked above instead.


@pytest.mark.parametrize("bad", [0, -5, 8 * 24 * 3600])
def test_presigned_url_bad_expiry(store: S3Storage, bad: int) -> None:
    with pytest.raises(ValueError):
        store.presigned_url("a.txt", bad)


def test_from_url(endpoint: str, aws_env: None) -> None:
    s = S3Storage.from_url("s3://my-bucket/some/prefix/", endpoint_url=endpoint)
    assert (s.bucket, s.prefix, s.endpoint_url) == ("my-bucket", "some/prefix", endpoint)
    s = S3Storage.from_url("s3://my-bucket")
    assert (s.bucket, s.prefix) == ("my-bucket", "")
    assert S3Storage.from_url("s3://my-bucket/").prefix == ""


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://bucket/x", "s3://"),
        ("s3:///prefix", "no bucket"),
        ("s3://Bad_Bucket/x", "bucket name"),
        ("s3://ab/x", "bucket name"),
        ("s3://bucket/a//b", "prefix"),
        ("s3://bucket/a/../b", "prefix"),
        ("s3://bucket/x?versionId=1", "query"),
        ("s3://user@bucket/x", "host"),
        ("s3://bucket:9000/x", "host"),
    ],
)
def test_from_url_errors(url: str, problem: str, aws_env: None) -> None:
    with pytest.raises(ValueError, match=problem):
        S3Storage.from_url(url)


def test_unreachable_endpoint(aws_env: None) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there once the probe socket closes
    s = S3Storage(BUCKET, "p", endpoint_url=dead, region=REGION, connect_timeout=1, read_timeout=1, max_attempts=1)
    started = time.monotonic()
    for attempt in (
        lambda: s.get_bytes("a.txt"),
        lambda: s.put_bytes("a.txt", b"x"),
        lambda: s.exists("a.txt"),
        lambda: s.delete("a.txt"),
    ):
        with pytest.raises(StorageUnavailable) as info:
            attempt()
        message = str(info.value)
        assert BUCKET in message and dead in message
    assert time.monotonic() - started < 10


def test_missing_bucket_is_unavailable(endpoint: str, aws_env: None) -> None:
    s = S3Storage("no-such-bucket-here", endpoint_url=endpoint, region=REGION)
    with pytest.raises(StorageUnavailable, match="no-such-bucket-here"):
        s.put_bytes("a.txt", b"x")
