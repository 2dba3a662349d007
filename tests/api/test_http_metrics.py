"""`GET /metrics` over HTTP: Prometheus text with the deployment's jobs and workers (from the database)
and the embedded worker's own timings; a key is needed like everywhere else."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import SUBMIT, data_uri, wait_terminal

pytestmark = pytest.mark.slow


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_report_jobs_workers_and_timings(server):
    with server.client() as client:
        body = {"image": data_uri(), "prompt": "metrics", "resolution": "480p", "num_frames": 30,
                "num_inference_steps": 4, "seed": 1}  # fmt: skip
        job = client.post(SUBMIT, json=body).json()["data"]
        assert wait_terminal(client, job["id"])["status"] == "completed"
        started = time.time()
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("framepack_jobs", (("state", "completed"),))] >= 1
    assert ("framepack_queue_oldest_wait_seconds", ()) in samples
    heartbeat = "framepack_worker_last_heartbeat_timestamp_seconds"
    heartbeats = {labels: v for (name, labels), v in samples.items() if name == heartbeat}
    assert heartbeats and all(started - 60 < v <= started + 5 for v in heartbeats.values())
    assert samples[("framepack_job_seconds_count", (("outcome", "completed"),))] >= 1
    assert samples[("framepack_queue_wait_seconds_count", ())] >= 1
    steps = [v for (name, labels), v in samples.items() if name == "framepack_step_seconds_count"]
    sections = [v for (name, labels), v in samples.items() if name == "framepack_section_seconds_count"]
    assert sum(steps) >= 4 and sum(sections) >= 1


def test_metrics_need_a_key(server):
    with server.client(key="") as client:
        client.headers.pop("authorization", None)
        assert client.get("/metrics").status_code == 401
