"""The job queue: submit, claim under a lease, heartbeat, complete / fail / cancel, requeue expired.

Every state transition is one transaction and the row is the truth. Claims take the oldest
``created`` job (exact FIFO by ``seq``) with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL and
inside a ``BEGIN IMMEDIATE`` transaction on SQLite (where ``FOR UPDATE`` is not rendered), so no job
is ever handed to two workers. A worker owns a job while it is ``processing`` with its ``worker_id``:
worker ids must be unique per worker process (a restarted worker takes a new one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, update
from sqlalchemy.orm import Session

from .db import Database
from .tables import JobRow, as_utc, new_id, utcnow

# How a job's params point at a picture in our own storage ("storage:<key>"): the API writes it, the worker reads it.
STORAGE_REF = "storage:"


class JobState(StrEnum):
    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class WebhookState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """A job as read from its row (plain values; UTC-aware datetimes)."""

    id: str
    seq: int
    key_id: str | None
    model: str
    params: dict[str, Any]
    options: dict[str, Any]
    webhook: str | None
    state: JobState
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    lease_until: datetime | None
    worker_id: str | None
    cancel_requested: bool
    progress: dict[str, Any] | None
    outputs: list[str]
    has_nsfw_contents: list[bool]
    error: str
    inference_ms: int | None
    webhook_state: WebhookState | None
    result_seed: int | None

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(
            id=row.id,
            seq=row.seq,
            key_id=row.key_id,
            model=row.model,
            params=dict(row.params),
            options=dict(row.options),
            webhook=row.webhook,
            state=JobState(row.state),
            created_at=as_utc(row.created_at),  # type: ignore[arg-type]
            started_at=as_utc(row.started_at),
            finished_at=as_utc(row.finished_at),
            attempts=row.attempts,
            lease_until=as_utc(row.lease_until),
            worker_id=row.worker_id,
            cancel_requested=bool(row.cancel_requested),
            progress=dict(row.progress) if row.progress is not None else None,
            outputs=list(row.outputs),
            has_nsfw_contents=list(row.has_nsfw_contents),
            error=row.error,
            inference_ms=row.inference_ms,
            webhook_state=WebhookState(row.webhook_state) if row.webhook_state else None,
            result_seed=row.result_seed,
        )


@dataclass(frozen=True)
class Control:
    """What a heartbeat tells the worker: whether it still owns the job, and whether to stop."""

    owned: bool
    cancel_requested: bool


def _gave_up(attempts: int) -> str:
    return f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} (the worker holding it stopped responding)"


def _give_back(row: JobRow, now: datetime, max_attempts: int | None, error: str) -> None:
    """A held job leaves its worker: ``cancelled`` if a cancel was asked, ``failed`` with ``error`` once
    ``max_attempts`` are spent (None: no cap), else back to ``created``."""
    if row.cancel_requested:
        row.state, row.finished_at = JobState.CANCELLED, now
    elif max_attempts is not None and row.attempts >= max_attempts:
        row.state, row.finished_at, row.error = JobState.FAILED, now, error
    else:
        row.state = JobState.CREATED
    row.worker_id = None
    row.lease_until = None


class JobStore:
    """The job table as a queue. ``clock`` (default: UTC now) is for tests that move time."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self._clock = clock

    def _now(self) -> datetime:
        return as_utc(self._clock())  # type: ignore[return-value]

    def _owned(self, job_id: str, worker_id: str) -> ColumnElement[bool]:
        return (JobRow.id == job_id) & (JobRow.state == JobState.PROCESSING) & (JobRow.worker_id == worker_id)

    def _locked(self, session: Session, query: Select[tuple[JobRow]], *, skip_locked: bool = False) -> list[JobRow]:
        return list(session.scalars(query.with_for_update(skip_locked=skip_locked)))

    # --- producers -------------------------------------------------------------------------------

    def submit(
        self,
        key_id: str | None,
        model: str,
        params: dict[str, Any],
        *,
        options: dict[str, Any] | None = None,
        webhook: str | None = None,
    ) -> Job:
        """Store a new ``created`` job (committed before this returns)."""
        row = JobRow(
            id=new_id(),
            key_id=key_id,
            model=model,
            params=dict(params),
            options=dict(options or {}),
            webhook=webhook,
            state=JobState.CREATED,
            created_at=self._now(),
            attempts=0,
            cancel_requested=False,
            outputs=[],
            has_nsfw_contents=[],
            error="",
            webhook_state=WebhookState.PENDING if webhook else None,
        )
        if self.db.dialect == "sqlite":
            # Inside the insert, under SQLite's single writer lock: unique and increasing.
            row.seq = select(func.coalesce(func.max(JobRow.seq), 0) + 1).scalar_subquery()  # type: ignore[assignment]
        with self.db.session() as session:
            session.add(row)
            session.flush()
            session.refresh(row)
            return Job.from_row(row)

    def cancel(self, job_id: str, key_id: str | None = None) -> Job | None:
        """Cancel: a ``created`` job becomes ``cancelled`` at once; a ``processing`` one is asked to stop
        (``cancel_requested``; its worker calls :meth:`mark_cancelled`); a finished one is left as it is."""
        query = select(JobRow).where(JobRow.id == job_id)
        if key_id is not None:
            query = query.where(JobRow.key_id == key_id)
        with self.db.session() as session:
            rows = self._locked(session, query)
            if not rows:
                return None
            row = rows[0]
            if row.state == JobState.CREATED:
                row.state = JobState.CANCELLED
                row.finished_at = self._now()
            elif row.state == JobState.PROCESSING:
                row.cancel_requested = True
            session.flush()
            return Job.from_row(row)

    # --- workers ---------------------------------------------------------------------------------

    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        """Take the oldest ``created`` job: ``processing``, held by ``worker_id`` until the lease ends."""
        ready = (JobRow.not_before.is_(None)) | (JobRow.not_before <= self._now())
        query = select(JobRow).where(JobRow.state == JobState.CREATED, ready).order_by(JobRow.seq).limit(1)
        with self.db.session(write=False) as session:  # idle workers poll: don't take the writer lock for nothing
            if session.scalar(query.with_only_columns(JobRow.id)) is None:
                return None
        with self.db.session() as session:
            rows = self._locked(session, query, skip_locked=True)
            if not rows:
                return None
            row, now = rows[0], self._now()  # now: taken while holding the lock
            row.state = JobState.PROCESSING
            row.worker_id = worker_id
            row.lease_until = now + timedelta(seconds=lease_seconds)
            row.attempts += 1
            row.started_at = row.started_at or now
            session.flush()
            return Job.from_row(row)

    def heartbeat(
        self, job_id: str, worker_id: str, lease_seconds: float, progress: dict[str, Any] | None = None
    ) -> Control:
        """Renew the lease (and store ``progress``) if ``worker_id`` still holds the job."""
        with self.db.session() as session:
            rows = self._locked(session, select(JobRow).where(JobRow.id == job_id))
            if not rows:
                return Control(owned=False, cancel_requested=False)
            row = rows[0]
            if row.state != JobState.PROCESSING or row.worker_id != worker_id:
                return Control(owned=False, cancel_requested=row.cancel_requested or row.state == JobState.CANCELLED)
            row.lease_until = self._now() + timedelta(seconds=lease_seconds)
            if progress is not None:
                row.progress = dict(progress)
            return Control(owned=True, cancel_requested=row.cancel_requested)

    def control(self, job_id: str, worker_id: str) -> Control:
        """What :meth:`heartbeat` would say, without renewing anything (a cheap read for frequent polls)."""
        query = select(JobRow.state, JobRow.worker_id, JobRow.cancel_requested).where(JobRow.id == job_id)
        with self.db.session(write=False) as session:
            row = session.execute(query).first()
        if row is None:
            return Control(owned=False, cancel_requested=False)
        owned = row.state == JobState.PROCESSING and row.worker_id == worker_id
        return Control(owned=owned, cancel_requested=bool(row.cancel_requested) or row.state == JobState.CANCELLED)

    def _finish(self, job_id: str, worker_id: str, state: JobState, **values: Any) -> bool:
        statement = (
            update(JobRow)
            .where(self._owned(job_id, worker_id))
            .values(state=state, finished_at=self._now(), lease_until=None, **values)
            .execution_options(synchronize_session=False)
        )
        with self.db.session() as session:
            return session.execute(statement).rowcount == 1  # type: ignore[attr-defined]

    def complete(
        self,
        job_id: str,
        worker_id: str,
        outputs: list[str],
        has_nsfw_contents: list[bool],
        inference_ms: int,
        seed: int | None = None,
    ) -> bool:
        """``completed`` with its outputs (storage keys), if ``worker_id`` still holds it."""
        return self._finish(
            job_id,
            worker_id,
            JobState.COMPLETED,
            outputs=list(outputs),
            has_nsfw_contents=list(has_nsfw_contents),
            inference_ms=inference_ms,
            result_seed=seed,
        )

    def fail(self, job_id: str, worker_id: str, error: str) -> bool:
        """``failed`` with ``error``, if ``worker_id`` still holds it."""
        return self._finish(job_id, worker_id, JobState.FAILED, error=error)

    def mark_cancelled(self, job_id: str, worker_id: str) -> bool:
        """``cancelled`` (the worker stopped on request), if ``worker_id`` still holds it."""
        return self._finish(job_id, worker_id, JobState.CANCELLED)

    def release(
        self,
        job_id: str,
        worker_id: str,
        *,
        max_attempts: int | None = None,
        reason: str = "",
        retry_after: float = 0.0,
    ) -> JobState | None:
        """Give a held job back. Without ``max_attempts`` (a worker stopping on request, its checkpoint
        saved) the job goes back to ``created`` and the attempt is not counted. With it (a transient
        failure such as unreachable storage) the attempt counts: back to ``created``, claimable again
        ``retry_after`` seconds from now, or ``failed`` with ``reason`` once ``max_attempts`` are spent.
        A cancel asked meanwhile wins. Returns the new state, or None if ``worker_id`` no longer held
        the job."""
        query = select(JobRow).where(self._owned(job_id, worker_id))
        with self.db.session() as session:
            rows = self._locked(session, query)
            if not rows:
                return None
            row, now = rows[0], self._now()
            error = f"gave up after {row.attempts} attempts: {reason}" if reason else _gave_up(row.attempts)
            _give_back(row, now, max_attempts, error)
            if row.state == JobState.CREATED:
                if max_attempts is None:
                    row.attempts = max(0, row.attempts - 1)
                row.not_before = now + timedelta(seconds=retry_after) if retry_after > 0 else None
            return JobState(row.state)

    def requeue_expired(self, max_attempts: int, now: datetime | None = None) -> int:
        """Jobs whose lease expired go back to ``created`` (progress kept), or to ``failed`` once they
        have been tried ``max_attempts`` times, or to ``cancelled`` if a cancel was asked. Returns how many."""
        now = as_utc(now) or self._now()
        query = select(JobRow).where(JobRow.state == JobState.PROCESSING, JobRow.lease_until < now).order_by(JobRow.seq)
        with self.db.session() as session:
            rows = self._locked(session, query, skip_locked=True)
            for row in rows:
                _give_back(row, now, max_attempts, _gave_up(row.attempts))
            return len(rows)

    # --- bookkeeping -----------------------------------------------------------------------------

    def get(self, job_id: str, key_id: str | None = None) -> Job | None:
        """The job, or None; with ``key_id``, only if that key submitted it."""
        query = select(JobRow).where(JobRow.id == job_id)
        if key_id is not None:
            query = query.where(JobRow.key_id == key_id)
        with self.db.session(write=False) as session:
            row = session.scalars(query).first()
            return Job.from_row(row) if row else None

    def counts(self, key_id: str | None = None) -> dict[str, int]:
        """How many jobs are in each state (every state present, zeros included); one key's or all."""
        query = select(JobRow.state, func.count()).group_by(JobRow.state)
        if key_id is not None:
            query = query.where(JobRow.key_id == key_id)
        with self.db.session(write=False) as session:
            rows = session.execute(query)
            found = {state: count for state, count in rows}
        return {state.value: found.get(state.value, 0) for state in JobState}

    def oldest_waiting(self) -> datetime | None:
        """When the oldest ``created`` job was submitted, or None if none waits."""
        query = select(func.min(JobRow.created_at)).where(JobRow.state == JobState.CREATED)
        with self.db.session(write=False) as session:
            return as_utc(session.scalar(query))

    def set_webhook_state(self, job_id: str, state: WebhookState | str) -> bool:
        """Record the webhook's delivery (``pending``, ``delivered`` or ``failed``)."""
        statement = (
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(webhook_state=WebhookState(state))
            .execution_options(synchronize_session=False)
        )
        with self.db.session() as session:
            return session.execute(statement).rowcount == 1  # type: ignore[attr-defined]

    def pending_webhooks(self, limit: int = 100) -> list[Job]:
        """Finished jobs whose webhook is still owed (``webhook_state == pending``), oldest first."""
        query = (
            select(JobRow)
            .where(JobRow.webhook_state == WebhookState.PENDING)
            .where(JobRow.state.in_([JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED]))
            .order_by(JobRow.seq)
            .limit(limit)
        )
        with self.db.session(write=False) as session:
            return [Job.from_row(row) for row in session.scalars(query)]

    def list(
        self, key_id: str | None, page: int = 1, page_size: int = 20, states: list[str] | None = None
    ) -> tuple[list[Job], int]:
        """One page of jobs, newest first, and the total; ``key_id=None`` lists every key's jobs,
        ``states`` keeps only jobs in those states."""
        if page < 1 or page_size < 1:
            raise ValueError("page and page_size must be at least 1")
        condition = JobRow.key_id == key_id if key_id is not None else JobRow.id.is_not(None)
        if states is not None:
            condition = condition & JobRow.state.in_(states)
        query = select(JobRow).where(condition).order_by(JobRow.seq.desc())
        with self.db.session(write=False) as session:
            total = session.scalar(select(func.count()).select_from(JobRow).where(condition)) or 0
            rows = session.scalars(query.offset((page - 1) * page_size).limit(page_size)).all()
            return [Job.from_row(row) for row in rows], total
