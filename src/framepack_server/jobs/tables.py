"""SQLAlchemy models of the job store: ``jobs`` (the queue), ``api_keys``, ``uploads``,
``workers`` and ``server_secrets``.

Every datetime column is a :class:`UTCDateTime`: timezone-aware UTC in Python on every dialect
(SQLite stores naive UTC text and gives naive datetimes back; they are normalised on read).
The migration in ``migrations/versions`` must match these tables exactly (a test compares them).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Identity, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random 32-hex-digit identifier."""
    return secrets.token_hex(16)


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (naive values are taken to be UTC already)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every dialect; naive datetimes are refused on write."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        value = value.astimezone(UTC)
        # SQLite keeps text and ignores tzinfo: store naive UTC so that text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class JobRow(Base):
    """One generation job; the table is the queue (FIFO by ``seq``)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_seq", "state", "seq"),
        Index("ix_jobs_key_id_seq", "key_id", "seq"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Exact FIFO order. PostgreSQL: an identity column; SQLite (which has no identity outside the
    # primary key) gets MAX(seq) + 1 inside the insert, which the single SQLite writer serialises.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    key_id: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]]
    options: Mapped[dict[str, Any]]
    webhook: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    progress: Mapped[dict[str, Any] | None]
    outputs: Mapped[list[Any]]
    has_nsfw_contents: Mapped[list[Any]]
    error: Mapped[str] = mapped_column(Text, default="")
    inference_ms: Mapped[int | None] = mapped_column(Integer)
    webhook_state: Mapped[str | None] = mapped_column(String(16))
    result_seed: Mapped[int | None] = mapped_column(BigInteger)
    # A job given back after a transient failure (storage unreachable) waits until then before it
    # can be claimed again, so that a short outage does not use up its attempts in a second.
    not_before: Mapped[datetime | None]


class ApiKeyRow(Base):
    """An API key: only the SHA-256 hex digest of the key is stored, with its first characters for display."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class UploadRow(Base):
    """An uploaded file (e.g. an input image) kept in storage under ``storage_key``."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    key_id: Mapped[str | None] = mapped_column(String(32))
    storage_key: Mapped[str] = mapped_column(Text)
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    completed: Mapped[bool] = mapped_column(default=False)


class WorkerRow(Base):
    """A worker process: where it runs, what it holds, and when it last reported (``framepack status``,
    ``/metrics``). Informational: the job rows and their leases stay the truth about who runs what."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # idle, busy, stopping, stopped
    job_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime]
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    gpu_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)  # allocated now, where there is a GPU
    gpu_memory_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)


class SecretRow(Base):
    """A server-wide secret (URL signing, webhook signing), shared by every API replica and worker
    that uses the same database, so a URL signed by one replica verifies at another."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # hex
    created_at: Mapped[datetime]
