"""API keys: ``fp_`` + 40 random URL-safe characters, stored only as their SHA-256 hex digest.

The plaintext is shown once, when the key is made. Keys are looked up by digest and the digests
compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from ..storage.signing import load_or_create_secret
from .db import Database
from .tables import ApiKeyRow, SecretRow, as_utc, new_id, utcnow

KEY_PREFIX = "fp_"
PREFIX_LENGTH = 8


def hash_key(plaintext: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key without its secret."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_row(cls, row: ApiKeyRow) -> ApiKeyInfo:
        return cls(row.id, row.name, row.prefix, as_utc(row.created_at), as_utc(row.revoked_at))  # type: ignore[arg-type]


class KeyStore:
    """Make, list, revoke and verify API keys."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_key(self, name: str) -> tuple[str, ApiKeyInfo]:
        """A new key: its plaintext (returned only here) and its record."""
        plaintext = KEY_PREFIX + secrets.token_urlsafe(30)  # 30 bytes: 40 characters
        row = ApiKeyRow(
            id=new_id(),
            name=name,
            key_hash=hash_key(plaintext),
            prefix=plaintext[:PREFIX_LENGTH],
            created_at=utcnow(),
        )
        with self.db.session() as session:
            session.add(row)
            session.flush()
            return plaintext, ApiKeyInfo.from_row(row)

    def list_keys(self) -> list[ApiKeyInfo]:
        """Every key, revoked ones included, oldest first."""
        with self.db.session(write=False) as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id))
            return [ApiKeyInfo.from_row(row) for row in rows]

    def revoke_key(self, key_id_or_prefix: str) -> bool:
        """Revoke the key with this id, display prefix or plaintext. True if an active key was revoked;
        False if none matches or it was revoked already. Raises ValueError if a prefix matches several."""
        query = select(ApiKeyRow).where(
            or_(
                ApiKeyRow.id == key_id_or_prefix,
                ApiKeyRow.prefix == key_id_or_prefix,
                ApiKeyRow.key_hash == hash_key(key_id_or_prefix),
            )
        )
        with self.db.session() as session:
            rows = session.scalars(query).all()
            if len(rows) > 1:
                raise ValueError(f"{key_id_or_prefix!r} matches {len(rows)} keys: give the key id")
            if not rows or rows[0].revoked_at is not None:
                return False
            rows[0].revoked_at = utcnow()
            return True

    def verify_key(self, plaintext: str) -> str | None:
        """The id of the key if ``plaintext`` is a valid, unrevoked key; otherwise None."""
        digest = hash_key(plaintext)
        with self.db.session(write=False) as session:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest)).first()
            if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
                return None
            return row.id

    def has_keys(self, *, active_only: bool = False) -> bool:
        """Whether any key was ever made (``active_only``: any not revoked).

        Revoked keys count by default, so that revoking the last key does not open a server that
        requires keys whenever some exist.
        """
        query = select(func.count()).select_from(ApiKeyRow)
        if active_only:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        with self.db.session(write=False) as session:
            return bool(session.scalar(query))


def shared_secret(db: Database, name: str, seed_file: Path) -> bytes:
    """The server-wide secret ``name``, kept in the database so that every replica on it agrees.

    The first process to ask stores the secret of ``seed_file`` (created if missing: an install that
    began on one box keeps the URLs and webhook signatures it already handed out); later ones, on any
    machine, read it back.
    """
    with db.session(write=False) as session:
        row = session.get(SecretRow, name)
        if row is not None:
            return bytes.fromhex(row.value)
    secret = load_or_create_secret(seed_file)
    try:
        with db.session() as session:
            session.add(SecretRow(name=name, value=secret.hex(), created_at=utcnow()))
    except IntegrityError:  # another replica stored one first: use theirs
        with db.session(write=False) as session:
            return bytes.fromhex(session.get(SecretRow, name).value)  # type: ignore[union-attr]
    return secret
