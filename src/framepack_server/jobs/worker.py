"""The worker: claims jobs from the table, runs the engine, stores the video, records the result.

The only place where jobs meet the engine. One worker per device; it holds a job under a lease that
a heartbeat thread renews (and through which it learns of a cancel); the engine's section checkpoints
go to the shared storage, so a job whose worker died resumes from its last finished section on the
next claim, on any machine, and writes the same video.

Failures are sorted by what they mean: bad input fails the job; storage that can't be reached gives
the job back (the attempt counts, and the cap ends it as failed with the reason); a database that is
away is waited for (the job's result is not thrown away); a stop request (SIGTERM) finishes the
section, checkpoints it and gives the job back without counting the attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PIL import Image

from .. import metrics
from ..engine.request import GenerationParams
from ..errors import GenerationCancelled, GenerationPaused, InputError
from ..generator import FramePack
from ..media.fetch import FetchPolicy
from ..media.images import load_image
from ..media.safety import SafetyChecker, SafetyVerdict, sample_frames
from ..storage.base import Storage, StorageUnavailable
from .checkpoints import BlobCheckpoint
from .db import is_unavailable
from .heartbeat import Heartbeat, ProgressReporter
from .roster import Roster
from .store import STORAGE_REF, Job, JobStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")
REQUEUE_EVERY_SECONDS = 1.0  # how often an idle worker looks for jobs whose worker died
ROSTER_EVERY_SECONDS = 5.0  # how often an idle worker reports itself
DB_RETRY_SECONDS = 300.0  # how long a finished job's result waits for the database to come back
STORAGE_BACKOFF_SECONDS = 2.0  # this worker's pause after giving a job back because storage was unreachable


class EngineCache:
    """Keeps the one model a GPU can hold; switching models unloads the previous one."""

    def __init__(self, load: Callable[[str], FramePack]) -> None:
        self._load = load
        self._current: tuple[str, FramePack] | None = None

    def get(self, model: str) -> FramePack:
        if self._current is None or self._current[0] != model:
            self._current = None  # free the old model before loading the next
            self._current = (model, self._load(model))
        return self._current[1]


class Worker:
    def __init__(
        self,
        store: JobStore,
        storage: Storage,
        engines: EngineCache,
        work_dir: Path,
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        worker_id: str | None = None,
        safety: SafetyChecker | str | None = None,
        safety_policy: str = "flag",
        fetch_policy: FetchPolicy | None = None,
        roster: Roster | None = None,
        device: str = "",
        retry_backoff: float = 5.0,
    ) -> None:
        """``safety``: the checker, or a string saying why none could be loaded (jobs that ask for
        a check then fail with that reason); ``safety_policy``: ``flag`` (WaveSpeed's behaviour: the
        video is returned and flagged) or ``block`` (the job fails and no video is kept).
        ``roster``: where the worker reports itself (``framepack status``, ``/metrics``);
        ``retry_backoff``: seconds before a job given back for unreachable storage may run again
        (doubling with each attempt), so a short outage does not use up its attempts."""
        if safety_policy not in ("flag", "block"):
            raise ValueError("safety_policy must be flag or block")
        self.safety, self.safety_policy = safety, safety_policy
        self.fetch_policy = fetch_policy
        self.store, self.storage, self.engines, self.roster = store, storage, engines, roster
        self.work_dir = Path(work_dir)
        self.lease, self.max_attempts = lease_seconds, max_attempts
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.device, self.retry_backoff = device, retry_backoff
        self.stop_event = threading.Event()  # no new jobs
        self.pause_event = threading.Event()  # the job in hand: stop after its current section
        self.abort_event = threading.Event()  # the job in hand: stop at the next step
        self._last_requeue = self._last_report = 0.0
        self._current: Job | None = None
        self._registered = False

    def request_stop(self, *, now: bool = False) -> None:
        """Stop taking jobs; the job in hand finishes its section, is checkpointed and given back
        (``now``: at the next sampling step, from the last saved section)."""
        self.stop_event.set()
        self.pause_event.set()
        if now:
            self.abort_event.set()

    # ---- loop ----------------------------------------------------------------------------------

    def run_forever(self, idle_sleep: float = 0.2) -> None:
        log.info("%s started", self.worker_id)
        while not self.stop_event.is_set():
            try:
                if not self.run_once():
                    self.stop_event.wait(idle_sleep)
            except Exception as exc:  # the loop must survive anything; the job itself was dealt with
                if is_unavailable(exc):
                    log.warning("%s: database unavailable (%s); retrying", self.worker_id, type(exc).__name__)
                else:
                    log.exception("%s: unexpected error", self.worker_id)
                self.stop_event.wait(1.0)
        self._report_safely("stopped")
        log.info("%s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        now = time.monotonic()
        if now - self._last_requeue >= REQUEUE_EVERY_SECONDS:
            self._last_requeue = now
            self.store.requeue_expired(self.max_attempts)
        if not self._registered:
            self._report_safely("idle", register=True)
        elif now - self._last_report >= ROSTER_EVERY_SECONDS:
            self._report_safely("idle")
        job = self.store.claim(self.worker_id, self.lease)
        if job is None:
            return False
        if job.attempts == 1 and job.started_at is not None:
            metrics.QUEUE_WAIT.observe((job.started_at - job.created_at).total_seconds())
        self.process(job)
        return True

    # ---- roster ---------------------------------------------------------------------------------

    def _report(self, state: str | None = None, *, register: bool = False, finished_job: bool = False) -> None:
        if self.roster is None:
            return
        if register:
            self.roster.register(self.worker_id, self.device)
            self._registered = True
        job = self._current
        state = state or ("stopping" if self.pause_event.is_set() else "busy" if job else "idle")
        self.roster.report(
            self.worker_id, state, job.id if job else None, finished_job=finished_job, gpu_memory=_gpu_memory()
        )
        self._last_report = time.monotonic()

    def _report_safely(self, state: str | None = None, **kwargs: bool) -> None:
        try:
            self._report(state, **kwargs)
        except Exception as exc:  # the roster is informational: never let it stop work
            log.warning("%s: could not report to the roster: %s", self.worker_id, exc)

    # ---- one job -------------------------------------------------------------------------------

    def _image(self, ref: str, field: str) -> Image.Image:
        if ref.startswith(STORAGE_REF):
            return load_image(self.storage.get_bytes(ref[len(STORAGE_REF) :]), field)
        if not ref.startswith(("http://", "https://")):
            raise InputError(field, "must be an http(s) URL or an upload")
        return load_image(ref, field, fetch_policy=self.fetch_policy)

    def _persist(self, what: str, call: Callable[[], _T]) -> _T:
        """Record a result in the database, waiting for it if it is away (up to DB_RETRY_SECONDS):
        a finished video must not be thrown away, nor the job run again, for a database restart."""
        deadline = time.monotonic() + DB_RETRY_SECONDS
        while True:
            try:
                return call()
            except Exception as exc:
                if not is_unavailable(exc) or time.monotonic() > deadline:
                    raise
                name = type(exc).__name__
                log.warning("%s: database unavailable while %s (%s); retrying", self.worker_id, what, name)
                time.sleep(1.0)

    def process(self, job: Job) -> None:
        log.info("%s: job %s started (attempt %d)", self.worker_id, job.id, job.attempts)
        self._current = job
        heartbeat = Heartbeat(self.store, job, self.worker_id, self.lease, report=self._report)
        heartbeat.start()
        checkpoint = BlobCheckpoint(self.storage, f"checkpoints/{job.id}/")
        partial = self.work_dir / "partial" / f"{job.id}-{uuid.uuid4().hex[:6]}.mp4"
        partial.parent.mkdir(parents=True, exist_ok=True)
        started, outcome = time.monotonic(), "failed"
        try:
            params = GenerationParams.model_validate(job.params)
            image = self._image(params.image, "image")
            last = self._image(params.last_image, "last_image") if params.last_image else None
            fp = self.engines.get(params.model)
            check = bool(job.options.get("enable_safety_checker", True)) and self.safety is not None
            if check and isinstance(self.safety, str):
                raise SafetyUnavailable(f"the safety checker is not available: {self.safety}")
            result = fp.render(
                params, image, last, partial,
                on_progress=ProgressReporter(self.storage, job, heartbeat),
                should_cancel=lambda: heartbeat.should_stop() or self.abort_event.is_set(),
                should_pause=self.pause_event.is_set,
                checkpoint=checkpoint,
                keep_frames=sample_frames(params.num_frames) if check else (),
            )  # fmt: skip
            inference_ms = int((time.monotonic() - started) * 1000)
            verdict = self._check(job, [image, *([last] if last else [])], result.samples) if check else None
            if verdict is not None and verdict.nsfw and self.safety_policy == "block":
                self._fail(job, f"blocked by the safety checker ({verdict.detail})")
                _clear(checkpoint)
                return
            key = f"outputs/{job.id}.mp4"
            self.storage.put_file(key, result.path, "video/mp4")
            flags = [bool(verdict and verdict.nsfw)]
            done = self._persist(
                "completing the job",
                lambda: self.store.complete(job.id, self.worker_id, [key], flags, inference_ms, seed=params.seed),
            )
            if done:
                outcome = "completed"
                log.info("%s: job %s completed in %.1f s", self.worker_id, job.id, inference_ms / 1000)
                _clear(checkpoint)
            else:
                log.warning("%s: job %s finished, but another worker holds it now", self.worker_id, job.id)
        except GenerationCancelled as exc:
            outcome = self._stopped(job, checkpoint, heartbeat, exc)
        except StorageUnavailable as exc:
            outcome, reason = "released", str(exc)
            state = self._persist(
                "giving the job back",
                lambda: self.store.release(
                    job.id, self.worker_id, max_attempts=self.max_attempts, reason=reason,
                    retry_after=self.retry_backoff * 2 ** max(0, job.attempts - 1),
                ),  # fmt: skip
            )
            log.warning("%s: job %s: storage unavailable (%s); job now %s", self.worker_id, job.id, reason, state)
            self.stop_event.wait(STORAGE_BACKOFF_SECONDS)
        except InputError as exc:
            self._fail(job, f"{exc.field}: {exc.message}")
        except Exception as exc:  # any engine failure fails the job, and the worker goes on
            log.exception("%s: job %s failed", self.worker_id, job.id)
            self._fail(job, _reason(exc))
            _free_gpu_memory()
        finally:
            heartbeat.stop_requested.set()
            partial.unlink(missing_ok=True)
            metrics.JOB_SECONDS.labels(outcome).observe(time.monotonic() - started)
            metrics.JOBS_FINISHED.labels(outcome).inc()
            self._current = None
            self._report_safely(finished_job=outcome == "completed")

    def _fail(self, job: Job, reason: str) -> None:
        self._persist("failing the job", lambda: self.store.fail(job.id, self.worker_id, reason))

    def _stopped(self, job: Job, checkpoint: BlobCheckpoint, heartbeat: Heartbeat, exc: GenerationCancelled) -> str:
        """The run stopped before the end: lost lease, a stop request, or the user's cancel."""
        if heartbeat.lost:
            log.warning("%s: lost the lease of job %s; another worker has it", self.worker_id, job.id)
            return "lost"
        if isinstance(exc, GenerationPaused) or self.abort_event.is_set():
            state = self._persist("giving the job back", lambda: self.store.release(job.id, self.worker_id))
            log.info("%s: job %s given back (%s; now %s)", self.worker_id, job.id, exc, state)
            return "released"
        self._persist("cancelling the job", lambda: self.store.mark_cancelled(job.id, self.worker_id))
        _clear(checkpoint)
        log.info("%s: job %s cancelled", self.worker_id, job.id)
        return "cancelled"

    def _check(self, job: Job, inputs: list[Image.Image], samples: dict) -> SafetyVerdict:
        """Check the input images and frames sampled across the video; log the time it took."""
        assert self.safety is not None and not isinstance(self.safety, str)
        started = time.monotonic()
        given = self.safety.check(inputs)
        numbers = sorted(samples)
        made = self.safety.check([Image.fromarray(samples[i]) for i in numbers], numbers)
        verdict = given if given.nsfw else made
        log.info(
            "job %s: safety check (%s) of %d input(s) and %d frames in %.0f ms: %s",
            job.id, self.safety.name, len(inputs), len(numbers), (time.monotonic() - started) * 1000,
            "flagged: " + verdict.detail if verdict.nsfw else "nothing found",
        )  # fmt: skip
        return verdict


class SafetyUnavailable(RuntimeError):
    pass


def _reason(exc: BaseException) -> str:
    if type(exc).__name__ == "OutOfMemoryError":
        return "out of GPU memory: try 480p, fewer frames, or --memory group"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _free_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _clear(checkpoint: BlobCheckpoint) -> None:
    try:
        checkpoint.clear()
    except Exception as exc:  # leftovers cost space, not correctness: the job is finished
        log.warning("could not delete a checkpoint: %s", exc)


def _gpu_memory() -> tuple[int, int] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()
