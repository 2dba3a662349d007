"""50 submissions from 10 concurrent clients against one real server: distinct ids, all complete, none
runs twice."""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import httpx
import pytest

from .conftest import SUBMIT, TERMINAL, smooth_png

pytestmark = pytest.mark.slow

SMALL = {"prompt": "a busy street", "resolution": "480p", "num_inference_steps": 4, "num_frames": 30}
CLIENTS = 10
PER_CLIENT = 5


@pytest.fixture(scope="module", autouse=True)
def _roomy_queue():
    """All 50 jobs come from one key: lift the per-key cap on waiting jobs (default 20) for this server.
    Module-scoped and autouse, so it is in place before the module's `server` starts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRAMEPACK_MAX_QUEUED_PER_KEY", str(CLIENTS * PER_CLIENT))
        yield


def test_fifty_submissions_from_ten_clients(server):
    images = ["data:image/png;base64," + base64.b64encode(smooth_png(seed)).decode() for seed in range(CLIENTS)]
    start = threading.Barrier(CLIENTS)
    deadline = time.monotonic() + 400

    def client_run(n: int) -> dict[str, str]:
        """One client: submit its jobs as fast as it can, then poll them until each one ends."""
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as client:
            start.wait(timeout=60)
            ids = []
            for k in range(PER_CLIENT):
                response = client.post(SUBMIT, json={"image": images[n], **SMALL, "seed": n * 100 + k})
                assert response.status_code == 200, response.text
                envelope = response.json()
                assert envelope["code"] == 200 and envelope["data"]["status"] == "created", envelope
                ids.append(envelope["data"]["id"])
            final: dict[str, str] = {}
            while len(final) < len(ids):
                assert time.monotonic() < deadline, f"client {n}: {len(final)} of {len(ids)} jobs finished"
                time.sleep(1.0)
                # one list call per second per client (the key's rate limit is shared by all ten)
                response = client.get("/api/v3/predictions", params={"page_size": 100})
                assert response.status_code == 200, response.text
                for item in response.json()["data"]["items"]:
                    if item["id"] in ids and item["status"] in TERMINAL and item["id"] not in final:
                        final[item["id"]] = item["status"]
            for job_id in ids:  # and each one by id, as a client would fetch its result
                response = client.get(f"/api/v3/predictions/{job_id}/result")
                assert response.status_code == 200, response.text
                data = response.json()["data"]
                assert data["status"] == final[job_id]
                if data["status"] == "completed":
                    assert len(data["outputs"]) == 1
            return final

    with ThreadPoolExecutor(CLIENTS) as pool:
        per_client = list(pool.map(client_run, range(CLIENTS)))

    statuses = {job_id: status for final in per_client for job_id, status in final.items()}
    assert sum(len(final) for final in per_client) == CLIENTS * PER_CLIENT
    assert len(statuses) == CLIENTS * PER_CLIENT  # 50 distinct ids
    assert set(statuses.values()) == {"completed"}, statuses

    # none ran twice: one claim and one completion each in the log, one attempt each in the database
    log = server.log_path.read_text()
    for job_id in statuses:
        assert log.count(f"job {job_id} started (attempt") == 1, job_id
        assert log.count(f"job {job_id} completed") == 1, job_id
    with closing(sqlite3.connect(server.data_dir / "jobs.db", timeout=30)) as db:
        rows = dict(db.execute("SELECT id, state || ':' || attempts FROM jobs").fetchall())
    assert {rows[job_id] for job_id in statuses} == {"completed:1"}

    health = httpx.get(server.url + "/health", timeout=10).json()
    assert health["jobs"]["completed"] >= CLIENTS * PER_CLIENT
    assert health["jobs"]["processing"] == health["jobs"]["created"] == 0
