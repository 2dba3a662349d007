"""Upload records: a file a client sends (e.g. an input image), kept in storage under ``storage_key``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from .db import Database
from .tables import UploadRow, as_utc, new_id, utcnow


@dataclass(frozen=True)
class UploadInfo:
    """An upload as read from its row; ``size`` is None until the bytes have arrived."""

    id: str
    key_id: str | None
    storage_key: str
    filename: str
    content_type: str
    size: int | None
    created_at: datetime
    completed: bool

    @classmethod
    def from_row(cls, row: UploadRow) -> UploadInfo:
        return cls(
            id=row.id,
            key_id=row.key_id,
            storage_key=row.storage_key,
            filename=row.filename,
            content_type=row.content_type,
            size=row.size,
            created_at=as_utc(row.created_at),  # type: ignore[arg-type]
            completed=bool(row.completed),
        )


class UploadStore:
    """Create, read and complete upload records."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_upload(
        self, key_id: str | None, storage_key: str, filename: str, content_type: str, size: int | None = None
    ) -> UploadInfo:
        """A new, not yet completed upload record."""
        row = UploadRow(
            id=new_id(),
            key_id=key_id,
            storage_key=storage_key,
            filename=filename,
            content_type=content_type,
            size=size,
            created_at=utcnow(),
            completed=False,
        )
        with self.db.session() as session:
            session.add(row)
            session.flush()
            return UploadInfo.from_row(row)

    def get_upload(self, upload_id: str, key_id: str | None = None) -> UploadInfo | None:
        """The upload, or None; with ``key_id``, only if that key made it."""
        query = select(UploadRow).where(UploadRow.id == upload_id)
        if key_id is not None:
            query = query.where(UploadRow.key_id == key_id)
        with self.db.session(write=False) as session:
            row = session.scalars(query).first()
            return UploadInfo.from_row(row) if row else None

    def complete_upload(self, upload_id: str, size: int) -> bool:
        """Mark the upload's bytes as stored (``size`` of them). True if the upload exists."""
        statement = (
            update(UploadRow)
            .where(UploadRow.id == upload_id)
            .values(size=size, completed=True)
            .execution_options(synchronize_session=False)
        )
        with self.db.session() as session:
            return session.execute(statement).rowcount == 1  # type: ignore[attr-defined]
