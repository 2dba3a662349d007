"""A worker process killed with SIGKILL in the middle of a job: another worker takes the job once its
lease expires and resumes it from the last finished section (the checkpoints are in the bucket), and
the video is, frame for frame, the video of an uninterrupted run of the same request."""

from __future__ import annotations

import re
import time
from datetime import datetime

import numpy as np
import pytest

from .conftest import (
    LEASE_SECONDS,
    WORKER_ARGS,
    claims,
    holder,
    logs,
    submit,
    video_frames,
    wait_progress,
    wait_terminal,
)

pytestmark = pytest.mark.slow

SECTIONS = 9
LONG = {"num_frames": 300, "num_inference_steps": 8, "latent_window_size": 9}  # ceil(299 / 36) = 9 sections
RESUMING = r"resuming after section (\d+) of (\d+)"
SLACK_S = 5  # noticing the expired lease (workers look every second) and claiming it, on a busy machine


def test_sigkill_mid_job_another_worker_resumes_from_the_last_section(cluster, api, tmp_path):
    target = submit(api, seed=4242, **LONG)
    reference = submit(api, seed=4242, **LONG)  # the same request, run by another worker without interruption

    # once the target samples its second section, its first is finished and checkpointed
    progress = wait_progress(
        api, target, lambda d: (d.get("progress") or {}).get("phase") == "sampling" and d["progress"]["section"] >= 2
    )["progress"]
    assert progress["sections"] == SECTIONS
    victim = holder(cluster, target)
    victim.kill()
    killed, killed_at = time.monotonic(), datetime.now()

    resumed = wait_terminal(api, target, timeout=180)
    finished = time.monotonic() - killed
    uninterrupted = wait_terminal(api, reference, timeout=180)
    assert resumed["status"] == uninterrupted["status"] == "completed", (resumed["error"], logs(cluster))

    runs = claims(cluster)
    (first, second), ref_run = runs[target], runs[reference]
    assert first[:2] == (victim.name, 1) and second[1] == 2 and second[0] != victim.name, runs[target]
    taken_after = (second[2] - killed_at).total_seconds()
    assert taken_after <= LEASE_SECONDS + SLACK_S, f"resumed {taken_after:.1f} s after the kill"
    resumes = [line for line in holder(cluster, target).lines(RESUMING) if line.at >= second[2]]
    assert resumes, logs(cluster)
    done, total = map(int, re.search(RESUMING, resumes[0].message).groups())  # type: ignore[union-attr]
    assert 1 <= done < total == SECTIONS

    # within the lease, the slack and the work left (at most a whole job's: the reference's run time)
    assert len(ref_run) == 1
    ref_log = holder(cluster, reference).log_text()
    ref_seconds = float(re.search(rf"job {reference} completed in ([\d.]+) s", ref_log)[1])  # type: ignore[index]
    assert finished <= LEASE_SECONDS + SLACK_S + ref_seconds, (finished, ref_seconds)

    frames = video_frames(resumed["outputs"][0], tmp_path / "resumed.mp4")
    expected = video_frames(uninterrupted["outputs"][0], tmp_path / "uninterrupted.mp4")
    assert frames.shape == (300, 48, 80, 3)
    differing = [i for i in range(len(frames)) if not np.array_equal(frames[i], expected[i])]
    assert not differing, f"{len(differing)} of {len(frames)} frames differ (first: {differing[:10]})"

    print(f"killed {victim.name} in section {progress['section']}; {second[0]} took the job {taken_after:.1f} s later "
          f"(lease {LEASE_SECONDS} s), resumed after section {done} of {total}, "
          f"done {finished:.1f} s after the kill")  # fmt: skip
    cluster.worker("w4", *WORKER_ARGS)  # three workers again for the tests that follow
