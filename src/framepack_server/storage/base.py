"""The storage interface shared by every backend, and the rule for what a key may look like."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Storage", "StorageUnavailable", "open_storage", "validate_key"]


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative POSIX path, else raise :class:`ValueError`.

    A key is one or more non-empty parts joined by ``/``. Refused: the empty key, absolute
    paths, backslashes, NUL characters, empty parts (``a//b``, a trailing ``/``) and the
    parts ``.`` and ``..``. The same rule holds for every backend, so a key that works
    locally also works on S3 and never escapes the storage root.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"storage key must not contain backslashes or NUL: {key!r}")
    if key.startswith("/"):
        raise ValueError(f"storage key must be relative: {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"storage key has an empty, '.' or '..' part: {key!r}")
    return key


class StorageUnavailable(RuntimeError):
    """The object store could not be reached or refused the request (not a missing object).

    Transient by nature: a worker gives the job back to the queue (the attempt counts) rather than
    failing it at once."""


@runtime_checkable
class Storage(Protocol):
    """A flat store of immutable objects addressed by keys like ``outputs/<job>.mp4``.

    Writes are atomic: a reader sees either no object or the whole object, never a partial
    one. Keys are checked with :func:`validate_key`; a bad key raises :class:`ValueError`.
    """

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store ``data`` under ``key``, replacing any object already there."""
        ...

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        """Store the finished local file ``path`` under ``key``; the caller may delete ``path`` afterwards."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object; :class:`FileNotFoundError` if there is none."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; no error if it is missing."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A path on this machine to serve the object from, or ``None`` if the backend keeps it elsewhere.

        The path is returned whether or not the object exists; check :meth:`exists` first.
        """
        ...

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or ``None`` if it is missing."""
        ...


def open_storage(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> Storage:
    """The storage at ``url``: ``s3://bucket/prefix`` (boto3, the ``s3`` extra) or a local folder."""
    if url.startswith("s3://"):
        try:
            from .s3 import S3Storage
        except ImportError as exc:  # boto3 missing
            raise ValueError(f"storage: {url!r} needs boto3: pip install 'framepack-server[s3]' ({exc})") from None
        return S3Storage.from_url(url, endpoint_url=endpoint_url, region=region)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"storage: {url!r} is neither s3://bucket/prefix nor a local folder")
    from .local import LocalStorage

    return LocalStorage(url.removeprefix("file://"))
