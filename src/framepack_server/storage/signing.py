"""Signed, expiring URLs: an HMAC-SHA256 over the path and the expiry time.

A download link is ``<path>?expires=<unix seconds>&sig=<hex>``; whoever holds it may fetch
``<path>`` until ``expires``. The secret lives in a file (:func:`load_or_create_secret`) so
links handed out before a restart still work after it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path

__all__ = ["SECRET_BYTES", "UrlSigner", "load_or_create_secret"]

SECRET_BYTES = 32
_MIN_SECRET_BYTES = 16
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]{1,12}")


class UrlSigner:
    """Signs URL paths with ``secret`` and checks the signatures.

    The signature covers the path exactly as given (sign the URL path, without its query
    string) and the expiry, so neither can be changed without invalidating it.
    """

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"signing secret must be at least {_MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def _digest(self, path: str, expires: int) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, path: str, expires_in: float, now: float | None = None) -> str:
        """Return the query string ``expires=<unix int>&sig=<hex>`` valid for ``expires_in`` seconds."""
        if expires_in <= 0:
            raise ValueError("expires_in must be positive")
        expires = int((time.time() if now is None else now) + expires_in)
        return f"expires={expires}&sig={self._digest(path, expires)}"

    def verify(self, path: str, expires: str | int, sig: str, now: float | None = None) -> bool:
        """Whether ``sig`` is this signer's signature of ``path`` and ``expires``, and not yet expired.

        Malformed input (a non-numeric expiry, a signature that is not 64 lowercase hex
        digits, wrong types) is simply invalid: this never raises.
        """
        if isinstance(expires, bool):
            return False
        if isinstance(expires, str):
            if not _DIGITS.fullmatch(expires):
                return False
            expires = int(expires)
        if not isinstance(expires, int) or not isinstance(sig, str) or not isinstance(path, str):
            return False
        if not _HEX_SHA256.fullmatch(sig):
            return False
        if (time.time() if now is None else now) >= expires:
            return False
        return hmac.compare_digest(self._digest(path, expires), sig)


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret in ``path``, creating it first (32 random bytes, mode 0600) if it is missing.

    Creation is race-free: the secret is written to a private temporary file and hard-linked
    into place, so two processes starting together end up with the same secret.
    """
    path = Path(path).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(SECRET_BYTES))
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)  # fails if another process got there first; then use theirs
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: fall back to a plain rename
                if not path.exists():
                    os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_bytes()
    if len(secret) < _MIN_SECRET_BYTES:
        raise ValueError(f"secret file {path} holds {len(secret)} bytes; at least {_MIN_SECRET_BYTES} are needed")
    return secret
