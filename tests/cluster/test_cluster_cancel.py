"""A cancel sent to the API process reaches the worker process that runs the job: the job ends
`cancelled` within about one sampling step (plus the worker's poll of the row), and that worker goes
on with the next job."""

from __future__ import annotations

import time

import pytest

from framepack_server.localstack import wait_for

from .conftest import claims, holder, logs, result, submit, wait_progress, wait_terminal

pytestmark = pytest.mark.slow

LONG = {"num_frames": 600, "num_inference_steps": 20}  # 17 sections of 20 steps: far from done when cancelled
# The worker reads the row at most every 0.25 s during sampling; then one step, the row's update and our poll.
WITHIN_S = 2.0


def test_a_cancel_through_the_api_stops_the_job_in_another_process(cluster, api):
    job = submit(api, seed=11, **LONG)
    steps_seen: dict[int, float] = {}

    def sampling_for_a_while(data: dict) -> bool:
        progress = data.get("progress") or {}
        if data["status"] == "processing" and progress.get("phase") == "sampling":
            steps_seen.setdefault(progress["section"] * 1000 + progress["step"], time.monotonic())
        return len(steps_seen) >= 4

    wait_progress(api, job, sampling_for_a_while)
    times = sorted(steps_seen.values())
    step_s = (times[-1] - times[0]) / (len(times) - 1)  # at most one step apart between our polls
    worker = holder(cluster, job)

    asked = time.monotonic()
    answer = api.post(f"/api/v3/predictions/{job}/cancel")
    assert answer.status_code == 200, answer.text
    data = wait_terminal(api, job, timeout=30)
    took = time.monotonic() - asked
    assert data["status"] == "cancelled", (data, logs(cluster))
    assert took <= WITHIN_S + step_s, f"cancelled after {took:.2f} s (a step takes about {step_s:.2f} s)"
    assert result(api, job)["status"] == "cancelled"  # and it stays so
    wait_for(lambda: f"job {job} cancelled" in worker.log_text(), 10, "the worker's log line")  # logged after the row
    assert worker.running
    assert len(claims(cluster)[job]) == 1

    after = submit(api, seed=12)  # every worker still takes jobs
    assert wait_terminal(api, after)["status"] == "completed"
