"""A worker asked to stop finishes its section, checkpoints it in storage and gives the job back
(no attempt counted); the next worker resumes from there and writes the same video. A storage
outage gives the job back with the attempt counted, and the cap ends it as failed with the reason."""

from __future__ import annotations

import io
import logging
import threading
import time

import pytest

from framepack_server.engine.request import GenerationParams
from framepack_server.generator import FramePack
from framepack_server.jobs.checkpoints import BlobCheckpoint
from framepack_server.jobs.db import Database
from framepack_server.jobs.roster import Roster
from framepack_server.jobs.store import JobStore
from framepack_server.jobs.worker import EngineCache, Worker
from framepack_server.media.video import read_frames
from framepack_server.storage.base import StorageUnavailable
from framepack_server.storage.local import LocalStorage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engines(settings):
    fp = FramePack("tiny", settings=settings)
    return EngineCache(lambda model: fp)


class CheckpointsUnreachable(LocalStorage):
    """Local storage whose checkpoint writes fail as an unreachable bucket's would."""

    def put_bytes(self, key, data, content_type=None):
        if key.startswith("checkpoints/"):
            raise StorageUnavailable(f"cannot store {key!r} in S3 bucket 'b' at http://127.0.0.1:1: refused")
        super().put_bytes(key, data, content_type)


def _setup(tmp_path, image, storage_class=LocalStorage):
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    store, storage = JobStore(db), storage_class(tmp_path / "files")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    storage.put_bytes("inputs/a/image.png", buffer.getvalue())
    params = GenerationParams.parse(
        image="storage:inputs/a/image.png", prompt="a lake", model="tiny", resolution="480p",
        num_frames=100, num_inference_steps=4, seed=11,
    ).model_dump()  # fmt: skip
    return db, store, storage, params


def test_stop_request_checkpoints_the_section_and_the_next_worker_resumes(tmp_path, engines, image, caplog):
    db, store, storage, params = _setup(tmp_path, image)
    roster = Roster(db)
    paused = store.submit("k", "m", params)
    first = Worker(store, storage, engines, tmp_path / "w1", worker_id="w1", roster=roster, device="cpu")
    first.request_stop()  # before the job: it stops after its first section
    assert first.run_once()
    job = store.get(paused.id)
    assert (job.state, job.attempts, job.worker_id) == ("created", 0, None)
    state = BlobCheckpoint(storage, f"checkpoints/{paused.id}/").load()
    assert state is not None and state.sections_done == 1
    assert not storage.exists(f"outputs/{paused.id}.mp4")
    assert {w.id: w.state for w in roster.list()}["w1"] == "stopping"

    with caplog.at_level(logging.INFO):
        second = Worker(store, storage, engines, tmp_path / "w2", worker_id="w2")
        assert second.run_once()
    assert "resuming after section 1 of 3" in caplog.text
    resumed = store.get(paused.id)
    assert resumed.state == "completed" and resumed.attempts == 1
    assert not storage.exists(f"checkpoints/{paused.id}/state.json")  # cleared once the video is stored

    fresh = store.submit("k", "m", params)
    assert second.run_once() and store.get(fresh.id).state == "completed"
    a = read_frames(storage.local_path(f"outputs/{paused.id}.mp4"))
    b = read_frames(storage.local_path(f"outputs/{fresh.id}.mp4"))
    assert a.shape == b.shape == (100, 48, 80, 3) and (a == b).all()


def test_storage_outage_gives_the_job_back_then_fails_it_with_the_reason(tmp_path, engines, image):
    _db, store, storage, params = _setup(tmp_path, image, CheckpointsUnreachable)
    job = store.submit("k", "m", params)
    worker = Worker(store, storage, engines, tmp_path / "w", max_attempts=2, retry_backoff=0.3)
    worker.stop_event.wait = lambda timeout=None: False  # no back-off pause in the test  # type: ignore[method-assign]
    assert worker.run_once()
    after_one = store.get(job.id)
    assert (after_one.state, after_one.attempts) == ("created", 1)
    assert not worker.run_once()  # backing off: not claimable yet
    time.sleep(0.4)
    assert worker.run_once()
    failed = store.get(job.id)
    assert failed.state == "failed" and failed.outputs == []
    assert failed.error.startswith("gave up after 2 attempts: cannot store") and "S3 bucket 'b'" in failed.error
    assert not storage.exists(f"outputs/{job.id}.mp4")


def test_cancel_reaches_the_worker_through_the_heartbeat_thread(tmp_path, engines, image):
    _db, store, storage, params = _setup(tmp_path, image)
    job = store.submit("k", "m", params)
    worker = Worker(store, storage, engines, tmp_path / "w")
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    while (current := store.get(job.id)).state == "created" or not current.progress:
        threading.Event().wait(0.05)
    store.cancel(job.id)
    runner.join(timeout=60)
    assert store.get(job.id).state == "cancelled"
    assert not storage.exists(f"checkpoints/{job.id}/state.json")
