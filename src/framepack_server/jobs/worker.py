"""The worker: claims jobs from the table, runs the engine, stores the video, records the result.

The only place where jobs meet the engine. One worker per device; it holds a job under a lease that
a heartbeat thread renews (and through which it learns of a cancel); the engine's section checkpoints
are kept with the job, so a job whose worker died resumes from its last finished section on the
next claim and writes the same video.
"""

from __future__ import annotations

import io
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..engine.checkpoint import FolderCheckpoint
from ..engine.generate import Progress
from ..engine.request import GenerationParams
from ..errors import GenerationCancelled, InputError
from ..generator import FramePack
from ..media.fetch import FetchPolicy
from ..media.images import load_image
from ..media.safety import SafetyChecker, SafetyVerdict, sample_frames
from ..progress import describe
from ..storage.base import Storage
from .store import STORAGE_REF, Job, JobStore

log = logging.getLogger(__name__)
PREVIEW_EVERY_SECONDS = 2.0
CANCEL_POLL_SECONDS = 0.25
REQUEUE_EVERY_SECONDS = 1.0  # how often an idle worker looks for jobs whose worker died


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


class _Heartbeat(threading.Thread):
    """Renews the lease, publishes progress, and notices a cancel or a lost lease."""

    def __init__(self, store: JobStore, job: Job, worker_id: str, lease: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job.id[:8]}")
        self.store, self.job, self.worker_id, self.lease = store, job, worker_id, lease
        self.progress: dict | None = None
        self.stop_requested = threading.Event()
        self.cancel_requested = False
        self.lost = False
        self._last_poll = 0.0

    def beat(self) -> None:
        try:
            control = self.store.heartbeat(self.job.id, self.worker_id, self.lease, self.progress)
        except Exception:  # a database hiccup: try again at the next beat, the lease has slack
            log.exception("heartbeat failed for job %s", self.job.id)
            return
        self.cancel_requested = control.cancel_requested
        self.lost = not control.owned

    def run(self) -> None:
        while not self.stop_requested.wait(self.lease / 3):
            self.beat()

    def should_stop(self) -> bool:
        """Checked at every sampling step: reads the row at most every CANCEL_POLL_SECONDS."""
        now = time.monotonic()
        if now - self._last_poll >= CANCEL_POLL_SECONDS:
            self._last_poll = now
            self.beat()
        return self.cancel_requested or self.lost


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
    ) -> None:
        """``safety``: the checker, or a string saying why none could be loaded (jobs that ask for
        a check then fail with that reason); ``safety_policy``: ``flag`` (WaveSpeed's behaviour: the
        video is returned and flagged) or ``block`` (the job fails and no video is kept)."""
        if safety_policy not in ("flag", "block"):
            raise ValueError("safety_policy must be flag or block")
        self.safety, self.safety_policy = safety, safety_policy
        self.fetch_policy = fetch_policy
        self.store, self.storage, self.engines = store, storage, engines
        self.work_dir = Path(work_dir)
        self.lease, self.max_attempts = lease_seconds, max_attempts
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self.stop_event = threading.Event()
        self._last_requeue = 0.0

    # ---- loop ----------------------------------------------------------------------------------

    def run_forever(self, idle_sleep: float = 0.2) -> None:
        log.info("%s started", self.worker_id)
        while not self.stop_event.is_set():
            try:
                if not self.run_once():
                    self.stop_event.wait(idle_sleep)
            except Exception:  # the loop must survive anything; the job itself was marked failed
                log.exception("%s: unexpected error", self.worker_id)
                self.stop_event.wait(1.0)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        now = time.monotonic()
        if now - self._last_requeue >= REQUEUE_EVERY_SECONDS:
            self._last_requeue = now
            self.store.requeue_expired(self.max_attempts)
        job = self.store.claim(self.worker_id, self.lease)
        if job is None:
            return False
        self.process(job)
        return True

    # ---- one job -------------------------------------------------------------------------------

    def _image(self, ref: str, field: str) -> Image.Image:
        if ref.startswith(STORAGE_REF):
            return load_image(self.storage.get_bytes(ref[len(STORAGE_REF) :]), field)
        if not ref.startswith(("http://", "https://")):
            raise InputError(field, "must be an http(s) URL or an upload")
        return load_image(ref, field, fetch_policy=self.fetch_policy)

    def process(self, job: Job) -> None:
        log.info("%s: job %s (attempt %d)", self.worker_id, job.id, job.attempts)
        heartbeat = _Heartbeat(self.store, job, self.worker_id, self.lease)
        heartbeat.start()
        checkpoint_dir = self.work_dir / "checkpoints" / job.id
        partial = self.work_dir / "partial" / f"{job.id}-{uuid.uuid4().hex[:6]}.mp4"
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            params = GenerationParams.model_validate(job.params)
            image = self._image(params.image, "image")
            last = self._image(params.last_image, "last_image") if params.last_image else None
            fp = self.engines.get(params.model)
            reporter = _ProgressReporter(self.storage, job.id, heartbeat)
            check = bool(job.options.get("enable_safety_checker", True)) and self.safety is not None
            if check and isinstance(self.safety, str):
                raise SafetyUnavailable(f"the safety checker is not available: {self.safety}")
            started = time.monotonic()
            result = fp.render(
                params, image, last, partial,
                on_progress=reporter,
                should_cancel=heartbeat.should_stop,
                checkpoint=FolderCheckpoint(checkpoint_dir),
                keep_frames=sample_frames(params.num_frames) if check else (),
            )  # fmt: skip
            inference_ms = int((time.monotonic() - started) * 1000)
            verdict = self._check(job, [image, *([last] if last else [])], result.samples) if check else None
            if verdict is not None and verdict.nsfw and self.safety_policy == "block":
                self.store.fail(job.id, self.worker_id, f"blocked by the safety checker ({verdict.detail})")
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
                return
            key = f"outputs/{job.id}.mp4"
            self.storage.put_file(key, result.path, "video/mp4")
            flags = [bool(verdict and verdict.nsfw)]
            if self.store.complete(job.id, self.worker_id, [key], flags, inference_ms, seed=params.seed):
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
            log.info("%s: job %s completed in %.1f s", self.worker_id, job.id, inference_ms / 1000)
        except GenerationCancelled:
            if heartbeat.lost:
                log.warning("%s: lost the lease of job %s; another worker has it", self.worker_id, job.id)
            else:
                self.store.mark_cancelled(job.id, self.worker_id)
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
                log.info("%s: job %s cancelled", self.worker_id, job.id)
        except InputError as exc:
            self.store.fail(job.id, self.worker_id, f"{exc.field}: {exc.message}")
        except Exception as exc:  # any engine failure fails the job, and the worker goes on
            self.store.fail(job.id, self.worker_id, _reason(exc))
            log.exception("%s: job %s failed", self.worker_id, job.id)
            _free_gpu_memory()
        finally:
            heartbeat.stop_requested.set()
            partial.unlink(missing_ok=True)

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


class _ProgressReporter:
    """Turns engine progress into the row's progress (via the heartbeat) and preview images."""

    def __init__(self, storage: Storage, job_id: str, heartbeat: _Heartbeat) -> None:
        self.storage, self.job_id, self.heartbeat = storage, job_id, heartbeat
        self._last_preview = 0.0
        self._last_section = 0

    def __call__(self, p: Progress) -> None:
        info = {
            "phase": p.phase, "section": p.section, "sections": p.sections, "step": p.step,
            "steps": p.steps, "eta_seconds": p.eta_seconds,
        }  # fmt: skip
        now = time.monotonic()
        if p.preview is not None and (now - self._last_preview >= PREVIEW_EVERY_SECONDS or p.step == p.steps):
            buffer = io.BytesIO()
            Image.fromarray(p.preview).save(buffer, format="PNG")
            key = f"previews/{self.job_id}.png"
            self.storage.put_bytes(key, buffer.getvalue(), "image/png")
            self._last_preview = now
        if self._last_preview:
            info["preview_key"] = f"previews/{self.job_id}.png"
        self.heartbeat.progress = info
        if p.phase == "sampling" and p.step == p.steps and p.section != self._last_section:
            self._last_section = p.section
            log.info("job %s: %s", self.job_id, describe(p))
            self.heartbeat.beat()  # publish each finished section at once


def _reason(exc: BaseException) -> str:
    if type(exc).__name__ == "OutOfMemoryError":
        return "out of GPU memory: try 480p, fewer frames, or --memory group"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _free_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
