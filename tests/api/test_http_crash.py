"""A server killed with SIGKILL mid-job resumes after a restart: every job completes exactly once, and the
interrupted job's video is frame-for-frame the video of an uninterrupted run of the same request."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing

import httpx
import numpy as np
import pytest

from framepack_server.media.video import probe_video, read_frames

from .conftest import SUBMIT, data_uri, wait_terminal

pytestmark = pytest.mark.slow

SECTIONS = 9
SMALL = {"prompt": "leaves in the wind", "resolution": "480p", "num_inference_steps": 4, "num_frames": 30}


def db_rows(data_dir, ids: list[str]) -> dict[str, tuple]:
    """(state, attempts, started_at) of each job, read straight from the server's SQLite database."""
    with closing(sqlite3.connect(data_dir / "jobs.db", timeout=30)) as db:
        marks = ",".join("?" * len(ids))
        rows = db.execute(f"SELECT id, state, attempts, started_at FROM jobs WHERE id IN ({marks})", ids)
        return {row[0]: row[1:] for row in rows}


def video_frames(url: str, path) -> np.ndarray:
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200
    path.write_bytes(response.content)
    info = probe_video(path)
    assert (info.width, info.height) == (80, 48)
    assert info.fps == pytest.approx(30.0)
    return read_frames(path)


def test_sigkill_mid_job_then_restart_resumes_every_job_once(make_server, tmp_path):
    server = make_server(env={"FRAMEPACK_LEASE_SECONDS": "2"})
    long_job = {
        "image": data_uri(3),
        "prompt": "a lighthouse in a storm",
        "resolution": "480p",
        "num_inference_steps": 16,
        "num_frames": 300,  # 9 sections: after the second one, several remain when the kill comes
        "latent_window_size": 9,
        "seed": 424242,
    }
    with server.client() as client:
        interrupted = client.post(SUBMIT, json=long_job).json()["data"]["id"]
        queued = [client.post(SUBMIT, json={"image": data_uri(s), **SMALL}).json()["data"]["id"] for s in (4, 5)]
        # wait until the long job samples its second section: the first one is finished and checkpointed
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, "the long job never reached its second section"
            data = client.get(f"/api/v3/predictions/{interrupted}/result").json()["data"]
            assert data["status"] in ("created", "processing"), data
            progress = data.get("progress") or {}
            if progress.get("phase") == "sampling" and progress.get("section", 0) >= 2:
                break
            time.sleep(0.05)
        assert progress["sections"] == SECTIONS  # 300 frames, latent window 9: ceil(299 / 36)
        server.kill()  # SIGKILL, no clean-up

    first_log = server.log_path.read_text()
    at_kill = db_rows(server.data_dir, [interrupted, *queued])
    assert at_kill[interrupted][:2] == ("processing", 1)
    assert all(at_kill[job][:2] == ("created", 0) for job in queued), at_kill
    checkpoints = server.data_dir / "files" / "checkpoints" / interrupted
    sections_done = json.loads((checkpoints / "state.json").read_text())["sections_done"]
    assert 1 <= sections_done < SECTIONS  # killed mid-job, with some sections to resume from

    server.start()  # same data folder, same environment
    with server.client() as client:
        done = {job: wait_terminal(client, job) for job in (interrupted, *queued)}
        for job, data in done.items():
            assert data["status"] == "completed", (job, data["error"])
        # the same request, same seed, run without interruption on the restarted server
        reference = client.post(SUBMIT, json=long_job).json()["data"]["id"]
        ref_data = wait_terminal(client, reference)
        assert ref_data["status"] == "completed", ref_data["error"]
    second_log = server.log_path.read_text()

    # no job ran twice: one completion each; the interrupted one was claimed once per server process
    for job in (interrupted, *queued, reference):
        assert (first_log + second_log).count(f"job {job} completed") == 1, job
    assert first_log.count(f"job {interrupted} started (attempt 1)") == 1
    assert second_log.count(f"job {interrupted} started (attempt 2)") == 1
    assert f"resuming after section {sections_done} of {SECTIONS}" in second_log
    for job in queued:
        assert f"job {job} started (attempt" not in first_log
        assert second_log.count(f"job {job} started (attempt 1)") == 1
    after = db_rows(server.data_dir, [interrupted, *queued, reference])
    assert after[interrupted][:2] == ("completed", 2)
    assert at_kill[interrupted][2] == after[interrupted][2]  # started_at is the first claim's
    for job in (*queued, reference):
        assert after[job][:2] == ("completed", 1), (job, after[job])
    assert not checkpoints.exists()  # cleaned up once the job completed

    # the resumed video is the uninterrupted video, decoded frame for frame
    resumed = video_frames(done[interrupted]["outputs"][0], tmp_path / "resumed.mp4")
    uninterrupted = video_frames(ref_data["outputs"][0], tmp_path / "reference.mp4")
    assert resumed.shape == (300, 48, 80, 3)
    differing = [i for i in range(len(resumed)) if not np.array_equal(resumed[i], uninterrupted[i])]
    assert np.array_equal(resumed, uninterrupted), (
        f"{len(differing)} of {len(resumed)} decoded frames differ (first: {differing[:10]}), "
        f"max |diff| {np.abs(resumed.astype(int) - uninterrupted).max()}"
    )
    assert done[interrupted]["seed"] == ref_data["seed"] == 424242
