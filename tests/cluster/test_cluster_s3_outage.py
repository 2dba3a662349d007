"""S3 unreachable while a job runs (its endpoint refuses connections; the bucket survives): the job
either fails with a reason that names the storage or, S3 being back, completes after retries. What is
never seen: a `completed` job whose output URL doesn't give the whole video, or a partial object."""

from __future__ import annotations

import re
import time

import pytest

from .conftest import claims, logs, result, submit, video_frames, wait_progress, wait_terminal

pytestmark = pytest.mark.slow

JOB = {"num_frames": 300, "num_inference_steps": 8}  # 9 sections
OUTAGE_S = 6
MOMENTS = {
    # S3 goes away while the job's middle sections are sampled (checkpoints and previews are being written)
    "mid-job": lambda p: p.get("phase") == "sampling" and p["section"] >= 2,
    # ... or while its last section is sampled: the decode and the output's upload come during the outage
    "at-the-end": lambda p: p.get("phase") == "sampling" and p["section"] == p["sections"] and p["step"] >= 2,
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_s3_unreachable_while_a_job_runs(cluster, api, moto, tmp_path, moment):
    job = submit(api, seed=99, **JOB)
    wait_progress(api, job, lambda d: MOMENTS[moment](d.get("progress") or {}))
    moto.block()
    try:
        blocked = time.monotonic()
        while time.monotonic() - blocked < OUTAGE_S:
            seen = result(api, job)  # the API (no S3 call needed for a result) keeps answering
            if seen["status"] == "completed":
                break  # its output must download in full: checked below, once S3 is back
            time.sleep(0.2)
    finally:
        moto.unblock()

    data = wait_terminal(api, job, timeout=180)
    attempts = claims(cluster)[job]
    assert 1 <= len(attempts) <= 2, attempts  # --max-attempts 2
    key = f"shared/outputs/{job}"
    stored = moto.client().list_objects_v2(Bucket="framepack-cluster", Prefix=key).get("Contents", [])
    if data["status"] == "completed":
        assert len(data["outputs"]) == 1
        frames = video_frames(data["outputs"][0], tmp_path / "out.mp4")
        assert frames.shape == (300, 48, 80, 3)
    else:
        assert data["status"] == "failed", (data, logs(cluster))
        assert re.search(r"\bS3\b|storage|bucket", data["error"], re.IGNORECASE), data["error"]
        assert not data["outputs"]
        assert not stored, stored  # no partial (or orphaned) output left in the bucket
    print(f"{moment}: {data['status']} after {len(attempts)} attempt(s); {data['error'] or 'no error'}")
