"""Where finished outputs live: a local folder (or, later, S3) behind one interface, and signed URLs.

* :class:`Storage` is the interface every backend implements; keys are relative POSIX paths
  such as ``outputs/<job>.mp4``.
* :class:`LocalStorage` keeps objects under one folder on this machine.
* :class:`UrlSigner` makes and checks expiring HMAC signatures for download URLs;
  :func:`load_or_create_secret` keeps its secret in a file so URLs survive a restart.
"""

from __future__ import annotations

from framepack_server.storage.base import Storage, validate_key
from framepack_server.storage.local import LocalStorage
from framepack_server.storage.signing import UrlSigner, load_or_create_secret

__all__ = ["LocalStorage", "Storage", "UrlSigner", "load_or_create_secret", "validate_key"]
