"""The roster of worker processes: who runs where, on which device, doing what, last seen when.

Each worker writes its own row when it starts, on every heartbeat and when it stops; ``framepack
status`` and ``/metrics`` read them. The job rows and their leases stay the truth about which
worker holds which job: a worker row that goes quiet is only reported, never acted on.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from .db import Database
from .tables import WorkerRow, as_utc, utcnow


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    device: str
    state: str
    job_id: str | None
    started_at: datetime
    last_seen: datetime
    jobs_done: int
    gpu_memory_bytes: int | None
    gpu_memory_peak_bytes: int | None

    @classmethod
    def from_row(cls, row: WorkerRow) -> WorkerInfo:
        return cls(
            id=row.id, host=row.host, pid=row.pid, device=row.device, state=row.state, job_id=row.job_id,
            started_at=as_utc(row.started_at), last_seen=as_utc(row.last_seen),  # type: ignore[arg-type]
            jobs_done=row.jobs_done, gpu_memory_bytes=row.gpu_memory_bytes,
            gpu_memory_peak_bytes=row.gpu_memory_peak_bytes,
        )  # fmt: skip


class Roster:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, worker_id: str, device: str) -> None:
        now = utcnow()
        with self.db.session() as session:
            session.merge(
                WorkerRow(
                    id=worker_id, host=socket.gethostname(), pid=os.getpid(), device=device, state="idle",
                    job_id=None, started_at=now, last_seen=now, jobs_done=0,
                )  # fmt: skip
            )

    def report(
        self,
        worker_id: str,
        state: str,
        job_id: str | None,
        *,
        finished_job: bool = False,
        gpu_memory: tuple[int, int] | None = None,
    ) -> None:
        """Record the worker's state now (its heartbeat); ``gpu_memory``: (allocated, peak) bytes."""
        with self.db.session() as session:
            row = session.get(WorkerRow, worker_id)
            if row is None:
                return
            row.state, row.job_id, row.last_seen = state, job_id, utcnow()
            if finished_job:
                row.jobs_done += 1
            if gpu_memory is not None:
                row.gpu_memory_bytes, row.gpu_memory_peak_bytes = gpu_memory

    def list(self) -> list[WorkerInfo]:
        with self.db.session(write=False) as session:
            return [WorkerInfo.from_row(r) for r in session.scalars(select(WorkerRow).order_by(WorkerRow.started_at))]

    def forget_stopped(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Drop rows of workers that stopped (or went silent) longer than ``older_than`` ago."""
        cutoff = utcnow() - older_than
        with self.db.session() as session:
            return session.execute(delete(WorkerRow).where(WorkerRow.last_seen < cutoff)).rowcount  # type: ignore[attr-defined]
