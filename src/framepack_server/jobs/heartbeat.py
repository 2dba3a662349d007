"""A running job's link to its row: the lease kept alive, progress published, a cancel noticed.

A thread does all the database work, so the sampling loop never waits on the database (nor stalls
while it is away): every CANCEL_POLL_SECONDS it reads the row's cancel flag, and every third of the
lease it renews the lease, stores the latest progress and reports the worker in the roster.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from PIL import Image

from .. import metrics
from ..engine.generate import Progress
from ..progress import describe
from ..storage.base import Storage
from .db import is_unavailable
from .store import Control, Job, JobStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")
CANCEL_POLL_SECONDS = 0.25
PREVIEW_EVERY_SECONDS = 2.0


class Heartbeat(threading.Thread):
    def __init__(
        self, store: JobStore, job: Job, worker_id: str, lease: float, report: Callable[[], None] | None = None
    ) -> None:
        """``report``: called at each renewal (the worker's roster entry)."""
        super().__init__(daemon=True, name=f"heartbeat-{job.id[:8]}")
        self.store, self.job, self.worker_id, self.lease, self.report = store, job, worker_id, lease, report
        self.progress: dict | None = None
        self.publish_now = threading.Event()
        self.stop_requested = threading.Event()
        self.cancel_requested = False
        self.lost = False
        self._last_renewal = 0.0

    def beat(self) -> None:
        """Renew the lease and store the progress now."""
        self._apply(self._guarded(lambda: self.store.heartbeat(self.job.id, self.worker_id, self.lease, self.progress)))
        self._last_renewal = time.monotonic()
        if self.report is not None:
            self._guarded(self.report)

    def poll(self) -> None:
        """Read the row's cancel flag and ownership, renewing nothing."""
        self._apply(self._guarded(lambda: self.store.control(self.job.id, self.worker_id)))

    def _apply(self, control: Control | None) -> None:
        if control is not None:
            self.cancel_requested = control.cancel_requested
            self.lost = not control.owned

    def _guarded(self, call: Callable[[], _T]) -> _T | None:
        """``call()``, or None after logging why it failed (the lease has slack: the next tick retries)."""
        try:
            return call()
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("job %s: database unavailable (%s); retrying", self.job.id, type(exc).__name__)
            else:
                log.exception("heartbeat failed for job %s", self.job.id)
            return None

    def run(self) -> None:
        self.beat()
        while not self.stop_requested.wait(CANCEL_POLL_SECONDS):
            if self.publish_now.is_set() or time.monotonic() - self._last_renewal >= self.lease / 3:
                self.publish_now.clear()
                self.beat()
            else:
                self.poll()

    def should_stop(self) -> bool:
        """Checked at every sampling step; reads flags only (the thread keeps them fresh)."""
        return self.cancel_requested or self.lost


class ProgressReporter:
    """Turns engine progress into the row's progress (through the heartbeat), preview images in
    storage, one log line per finished section, and step and section duration metrics."""

    def __init__(self, storage: Storage, job: Job, heartbeat: Heartbeat) -> None:
        self.storage, self.job_id, self.model, self.heartbeat = storage, job.id, job.model, heartbeat
        self._last_preview = 0.0
        self._last_section = 0
        self._last_event = self._section_started = time.monotonic()

    def __call__(self, p: Progress) -> None:
        info = {
            "phase": p.phase, "section": p.section, "sections": p.sections, "step": p.step,
            "steps": p.steps, "eta_seconds": p.eta_seconds,
        }  # fmt: skip
        now = time.monotonic()
        if p.phase == "sampling":
            metrics.STEP_SECONDS.labels(self.model).observe(now - self._last_event)
        else:
            self._section_started = now
        self._last_event = now
        if p.preview is not None and (now - self._last_preview >= PREVIEW_EVERY_SECONDS or p.step == p.steps):
            self._store_preview(p)
            self._last_preview = now
        if self._last_preview:
            info["preview_key"] = f"previews/{self.job_id}.png"
        self.heartbeat.progress = info
        if p.phase == "sampling" and p.step == p.steps and p.section != self._last_section:
            self._last_section = p.section
            metrics.SECTION_SECONDS.labels(self.model).observe(now - self._section_started)
            self._section_started = now
            log.info("job %s: %s", self.job_id, describe(p))
            self.heartbeat.publish_now.set()  # publish each finished section at once

    def _store_preview(self, p: Progress) -> None:
        buffer = io.BytesIO()
        Image.fromarray(p.preview).save(buffer, format="PNG")
        try:
            self.storage.put_bytes(f"previews/{self.job_id}.png", buffer.getvalue(), "image/png")
        except Exception as exc:  # a preview is a nicety: storage trouble shows at the checkpoint
            log.warning("job %s: preview not stored: %s", self.job_id, exc)
