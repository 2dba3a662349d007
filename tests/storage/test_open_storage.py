"""Picking the storage backend from a URL."""

from __future__ import annotations

import pytest

from framepack_server.storage import LocalStorage, open_storage
from framepack_server.storage.s3 import S3Storage


def test_local_folder_and_file_url(tmp_path):
    assert isinstance(open_storage(str(tmp_path / "a")), LocalStorage)
    local = open_storage(f"file://{tmp_path / 'b'}")
    assert isinstance(local, LocalStorage) and local.root == (tmp_path / "b").resolve()


def test_s3_url_with_endpoint():
    store = open_storage("s3://my-bucket/some/prefix", endpoint_url="http://127.0.0.1:9000", region="us-east-1")
    assert isinstance(store, S3Storage)
    assert (store.bucket, store.prefix, store.endpoint_url) == ("my-bucket", "some/prefix", "http://127.0.0.1:9000")


@pytest.mark.parametrize("url", ["gs://bucket/x", "http://example.com/files", "s3://Bad_Bucket"])
def test_unknown_schemes_and_bad_buckets_are_refused(url):
    with pytest.raises(ValueError, match="bucket|neither"):
        open_storage(url)
