"""Where inputs, checkpoints and outputs live: a local folder or an S3 bucket behind one interface,
and signed URLs.

* :class:`Storage` is the interface every backend implements; keys are relative POSIX paths
  such as ``outputs/<job>.mp4``. :func:`open_storage` picks the backend from a URL.
* :class:`LocalStorage` keeps objects under one folder on this machine; ``S3Storage`` (in
  ``storage.s3``, needs boto3) in a bucket, and signs presigned URLs.
* :class:`UrlSigner` makes and checks expiring HMAC signatures for download URLs;
  :func:`load_or_create_secret` keeps its secret in a file so URLs survive a restart.
"""

from __future__ import annotations

from framepack_server.storage.base import Storage, StorageUnavailable, open_storage, validate_key
from framepack_server.storage.local import LocalStorage
from framepack_server.storage.signing import UrlSigner, load_or_create_secret

__all__ = [
    "LocalStorage", "Storage", "StorageUnavailable", "UrlSigner", "load_or_create_secret", "open_storage",
    "validate_key",
]  # fmt: skip
