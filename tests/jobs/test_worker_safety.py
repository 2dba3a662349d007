"""The worker's safety check: policies with a stub detector, disabled checks, an unavailable checker."""

from __future__ import annotations

import io

import pytest

from framepack_server.engine.request import GenerationParams
from framepack_server.generator import FramePack
from framepack_server.jobs.db import Database
from framepack_server.jobs.store import JobStore
from framepack_server.jobs.worker import EngineCache, Worker
from framepack_server.media.safety import SafetyVerdict
from framepack_server.media.video import probe_video
from framepack_server.storage.local import LocalStorage

pytestmark = pytest.mark.slow


class StubDetector:
    """Flags everything (or nothing) and records what it was shown."""

    name = "stub"

    def __init__(self, flag: bool) -> None:
        self.flag, self.calls = flag, []

    def check(self, images, frame_numbers=None) -> SafetyVerdict:
        self.calls.append((len(images), list(frame_numbers or [])))
        return SafetyVerdict(self.flag, 0.99 if self.flag else 0.0, "stub: flagged" if self.flag else "stub: ok")


@pytest.fixture(scope="module")
def engines(settings):
    fp = FramePack("tiny", settings=settings)
    return EngineCache(lambda model: fp)


def _setup(tmp_path, image, num_frames=40):
    """A job store, a storage holding the uploaded picture, and a request on it."""
    store = JobStore(Database(f"sqlite:///{tmp_path / 'jobs.db'}"))
    storage = LocalStorage(tmp_path / "files")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    storage.put_bytes("inputs/a/image.png", buffer.getvalue())
    params = GenerationParams.parse(
        image="storage:inputs/a/image.png", prompt="a lake", model="tiny", resolution="480p",
        num_frames=num_frames, num_inference_steps=4, seed=3,
    ).model_dump()  # fmt: skip
    return store, storage, params


def _run(tmp_path, engines, image, safety, policy="flag", check=True):
    store, storage, params = _setup(tmp_path, image)
    job = store.submit("k", "wavespeed-ai/framepack", params, options={"enable_safety_checker": check})
    worker = Worker(store, storage, engines, tmp_path / "work", safety=safety, safety_policy=policy)
    assert worker.run_once()
    return store.get(job.id), storage


def test_flag_policy_returns_the_video_and_flags_it(tmp_path, engines, image):
    stub = StubDetector(flag=True)
    job, storage = _run(tmp_path, engines, image, stub, "flag")
    assert job.state == "completed" and job.has_nsfw_contents == [True]
    assert probe_video(storage.local_path(job.outputs[0])).frames == 40
    # The input image, then 8 frames spread across the video (first and last included).
    assert stub.calls[0] == (1, []) and stub.calls[1][0] == 8 and stub.calls[1][1][0] == 0
    assert stub.calls[1][1][-1] == 39


def test_block_policy_fails_the_job_and_keeps_no_video(tmp_path, engines, image):
    job, storage = _run(tmp_path, engines, image, StubDetector(flag=True), "block")
    assert job.state == "failed" and "blocked by the safety checker" in job.error and "stub: flagged" in job.error
    assert job.outputs == [] and not storage.exists(f"outputs/{job.id}.mp4")
    assert not list((tmp_path / "work" / "partial").glob("*"))


def test_clean_video_is_not_flagged(tmp_path, engines, image):
    job, _ = _run(tmp_path, engines, image, StubDetector(flag=False), "block")
    assert job.state == "completed" and job.has_nsfw_contents == [False]


def test_disabled_check_runs_no_check(tmp_path, engines, image):
    stub = StubDetector(flag=True)
    job, _ = _run(tmp_path, engines, image, stub, "block", check=False)
    assert job.state == "completed" and job.has_nsfw_contents == [False] and stub.calls == []


def test_unavailable_checker_fails_jobs_that_ask_for_it(tmp_path, engines, image):
    job, _ = _run(tmp_path, engines, image, "classifier: model not downloaded")
    assert job.state == "failed" and "safety checker is not available" in job.error


class _OutOfMemoryEngine:
    """An engine whose render runs out of GPU memory, as a too-large job does on a small card."""

    settings = None

    def render(self, *args, **kwargs):
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_fails_the_job_and_the_worker_runs_the_next(tmp_path, engines, image):
    store, storage, params = _setup(tmp_path, image, num_frames=30)
    first = store.submit("k", "wavespeed-ai/framepack", params)
    second = store.submit("k", "wavespeed-ai/framepack", params)

    class OneEngineAJob:  # the first job gets the failing engine, the second the real one
        sequence = iter([_OutOfMemoryEngine(), engines.get("tiny")])

        def get(self, model):
            return next(self.sequence)

    worker = Worker(store, storage, OneEngineAJob(), tmp_path / "work")
    assert worker.run_once() and worker.run_once()
    failed, done = store.get(first.id), store.get(second.id)
    assert failed.state == "failed" and failed.error.startswith("out of GPU memory")
    assert done.state == "completed"
