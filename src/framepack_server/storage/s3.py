"""Storage in an S3 bucket (AWS or anything speaking its API), through boto3."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from framepack_server.storage.base import StorageUnavailable, validate_key

__all__ = ["S3Storage", "StorageUnavailable"]

_T = TypeVar("_T")

# S3 bucket naming rules, simplified: 3-63 of lowercase letters, digits, dots and hyphens,
# starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the SigV4 limit


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_not_found(exc: ClientError) -> bool:
    return _error_code(exc) in _NOT_FOUND_CODES


def _normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except ValueError as exc:
            raise ValueError(f"invalid S3 key prefix {prefix!r}: {exc}") from None
    return prefix


class S3Storage:
    """Objects in ``bucket``; key ``outputs/a.mp4`` is stored as ``<prefix>/outputs/a.mp4``.

    Writes are atomic for readers: S3 makes an object visible only once its upload (single
    or multipart) has completed. Requests retry in botocore's ``standard`` mode and have
    connect and read timeouts; a failure to talk to S3 raises :class:`StorageUnavailable`
    naming the bucket and endpoint. Credentials and, unless given, the region come from the
    usual boto3 sources (environment, config files, instance roles).

    ``client`` replaces the boto3 client built here (the timeout and retry settings are then
    the caller's).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket):
            raise ValueError(f"invalid S3 bucket name: {bucket!r}")
        self.bucket = bucket
        self.prefix = _normalize_prefix(prefix)
        self.endpoint_url = endpoint_url
        if client is None:
            config = Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "max_attempts": max_attempts},
                signature_version="s3v4",
                # Custom endpoints (moto, MinIO, ...) rarely have per-bucket DNS names.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
            )
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.client = client

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, **kwargs: Any) -> S3Storage:
        """Build from ``s3://bucket`` or ``s3://bucket/some/prefix``; other keyword arguments go to the constructor."""
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError(f"S3 storage URL must start with 's3://': {url!r}")
        if not parts.netloc:
            raise ValueError(f"S3 storage URL has no bucket name: {url!r}")
        if parts.query or parts.fragment or "?" in url or "#" in url:
            raise ValueError(f"S3 storage URL must not have a query or fragment: {url!r}")
        if "@" in parts.netloc or ":" in parts.netloc:
            raise ValueError(f"S3 storage URL must name a bucket, not a host, user or port: {url!r}")
        if not _BUCKET.fullmatch(parts.netloc):
            raise ValueError(f"invalid S3 bucket name {parts.netloc!r} in {url!r}")
        try:
            prefix = _normalize_prefix(parts.path)
        except ValueError as exc:
            raise ValueError(f"{exc} in {url!r}") from None
        return cls(parts.netloc, prefix, endpoint_url=endpoint_url, **kwargs)

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3Storage({self.bucket!r}, {self.prefix!r}{where})"

    def _key(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self) -> str:
        endpoint = self.endpoint_url or getattr(getattr(self.client, "meta", None), "endpoint_url", None)
        return f"S3 bucket {self.bucket!r} at {endpoint or 'the default AWS endpoint'}"

    def _unavailable(self, action: str, key: str, exc: Exception) -> StorageUnavailable:
        return StorageUnavailable(f"cannot {action} {key!r} in {self._where()}: {exc}")

    def _call(self, action: str, key: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn``, turning transport and service errors (other than a missing object) into StorageUnavailable."""
        try:
            return fn()
        except ClientError as exc:
            if _is_not_found(exc):
                raise
            raise self._unavailable(action, key, exc) from exc
        except (BotoCoreError, S3UploadFailedError) as exc:
            raise self._unavailable(action, key, exc) from exc

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store ``data`` under ``key`` in one PUT."""
        full = self._key(key)
        extra = {"ContentType": content_type} if content_type else {}
        self._call("store", key, lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra))

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        """Upload the finished file ``path`` (multipart when large); ``path`` itself is left in place."""
        full = self._key(key)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file to upload: {str(path)!r}")
        extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
        self._call("upload", key, lambda: self.client.upload_file(str(path), self.bucket, full, **extra))

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; :class:`FileNotFoundError` if missing."""
        full = self._key(key)
        try:
            response = self._call("read", key, lambda: self.client.get_object(Bucket=self.bucket, Key=full))
            return self._call("read", key, lambda: response["Body"].read())
        except ClientError as exc:  # only not-found gets through _call
            raise FileNotFoundError(f"no object {key!r} in {self._where()}") from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        full = self._key(key)
        try:
            return self._call("look up", key, lambda: self.client.head_object(Bucket=self.bucket, Key=full))
        except ClientError:  # only not-found gets through _call
            return None

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        return self._head(key) is not None

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is fine (S3 deletes are idempotent)."""
        full = self._key(key)
        with contextlib.suppress(ClientError):  # only not-found gets through _call
            self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    def local_path(self, key: str) -> None:
        """Always ``None``: objects live in S3; serve them with :meth:`presigned_url`."""
        self._key(key)
        return None

    def size(self, key: str) -> int | None:
        """Size in bytes, or ``None`` if missing."""
        head = self._head(key)
        return None if head is None else int(head["ContentLength"])

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A URL anyone may GET the object from for ``expires_in`` seconds (1 to 7 days' worth).

        Signing happens locally: no request is made and the object's existence is not checked.
        """
        full = self._key(key)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int):
            raise TypeError("expires_in must be an int number of seconds")
        if not 0 < expires_in <= _MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_in must be between 1 and {_MAX_PRESIGN_SECONDS} seconds")
        params = {"Bucket": self.bucket, "Key": full}
        return self._call(
            "sign a URL for",
            key,
            lambda: self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in),
        )
