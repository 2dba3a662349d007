"""Cancel (our extension, POST /api/v3/predictions/{id}/cancel) and the sync-mode timeout, over real HTTP."""

from __future__ import annotations

import base64
import sqlite3
import time
from contextlib import closing

import httpx
import pytest
import wavespeed

from .conftest import MODEL, SUBMIT, TERMINAL, smooth_png, wait_terminal

pytestmark = pytest.mark.slow

SMALL = {"prompt": "a cat on a sofa", "resolution": "480p", "num_inference_steps": 4, "num_frames": 30}
LONG = {"prompt": "a long river journey", "resolution": "480p", "num_inference_steps": 20, "num_frames": 600}
SYNC_TIMEOUT_S = 3


@pytest.fixture(scope="module", autouse=True)
def _short_sync_timeout():
    """The module's `server` starts after this (module-scoped autouse fixtures come first)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRAMEPACK_SYNC_TIMEOUT_SECONDS", str(SYNC_TIMEOUT_S))
        yield


IMAGE = "data:image/png;base64," + base64.b64encode(smooth_png()).decode()


def submit(client: httpx.Client, fields: dict) -> str:
    response = client.post(SUBMIT, json={"image": IMAGE, **fields})
    assert response.status_code == 200, response.text
    return response.json()["data"]["id"]


def poll(client: httpx.Client, job_id: str) -> dict:
    response = client.get(f"/api/v3/predictions/{job_id}/result")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_sampling(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict:
    """Wait until the job is processing and sampling (past its set-up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = poll(client, job_id)
        assert data["status"] in ("created", "processing"), data
        if data["status"] == "processing" and (data.get("progress") or {}).get("phase") == "sampling":
            return data
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never started sampling")


def cancel(client: httpx.Client, job_id: str) -> dict:
    response = client.post(f"/api/v3/predictions/{job_id}/cancel")
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["code"] == 200
    assert "error" not in envelope
    return envelope["data"]


def db_row(server, job_id: str) -> tuple:
    """(state, attempts, started_at) straight from the server's SQLite database."""
    with closing(sqlite3.connect(server.data_dir / "jobs.db", timeout=30)) as db:
        return db.execute("SELECT state, attempts, started_at FROM jobs WHERE id = ?", (job_id,)).fetchone()


def test_cancel_a_running_job_then_the_worker_runs_the_next(server):
    with server.client() as client:
        running = submit(client, LONG)
        following = submit(client, SMALL)
        wait_sampling(client, running)

        asked = time.monotonic()
        answer = cancel(client, running)
        assert answer["id"] == running
        assert answer["status"] in ("processing", "cancelled")  # asked to stop; the worker stops it
        done = wait_terminal(client, running, timeout=30, interval=0.05)
        latency = time.monotonic() - asked
        assert done["status"] == "cancelled"
        assert latency < 10, f"the running job took {latency:.1f} s to stop"
        assert done["outputs"] == []
        assert done.get("progress") is None

        nxt = wait_terminal(client, following)
        assert nxt["status"] == "completed", nxt["error"]

        # cancelling what has ended changes nothing
        assert cancel(client, running)["status"] == "cancelled"
        assert cancel(client, following)["status"] == "completed"
        assert len(poll(client, following)["outputs"]) == 1

    log = server.log_path.read_text()
    assert log.count(f"job {running} cancelled") == 1
    assert f"job {running} completed" not in log
    assert db_row(server, running)[:2] == ("cancelled", 1)
    sdk = wavespeed.Client(api_key=server.key, base_url=server.url)
    assert sdk.get_result(running)["data"]["status"] == "cancelled"  # a status the SDK treats as terminal


def test_cancel_a_queued_job_and_it_never_starts(server):
    with server.client() as client:
        running = submit(client, LONG)
        queued = submit(client, SMALL)
        wait_sampling(client, running)

        answer = cancel(client, queued)
        assert answer["status"] == "cancelled"  # a waiting job is cancelled at once
        assert poll(client, queued)["status"] == "cancelled"

        cancel(client, running)
        assert wait_terminal(client, running, timeout=30)["status"] == "cancelled"
        # the worker is free again and passes over the cancelled job
        after = submit(client, SMALL)
        assert wait_terminal(client, after)["status"] == "completed"
        assert poll(client, queued)["status"] == "cancelled"

    state, attempts, started_at = db_row(server, queued)
    assert (state, attempts, started_at) == ("cancelled", 0, None)
    assert f"job {queued} started (attempt" not in server.log_path.read_text()  # never claimed by the worker


def test_sync_mode_timeout_while_processing(server):
    sdk = wavespeed.Client(api_key=server.key, base_url=server.url)
    with server.client() as client:
        started = time.monotonic()
        response = client.post(SUBMIT, json={"image": IMAGE, **LONG, "enable_sync_mode": True}, timeout=120)
        waited = time.monotonic() - started
        assert response.status_code == 200, response.text
        envelope = response.json()
        assert envelope["code"] == 200
        data = envelope["data"]
        assert data["status"] == "processing"
        assert "Sync mode timed out" in data["error"]
        assert data["urls"]["get"] in data["error"]
        assert SYNC_TIMEOUT_S - 0.5 <= waited < SYNC_TIMEOUT_S + 30
        first = data["id"]

        # the SDK recognises it as a sync timeout (not a failure) and gives the task id
        cancel(client, first)
        wait_terminal(client, first, timeout=30)
        outcome = sdk.run_no_throw(MODEL, {"image": IMAGE, **LONG}, enable_sync_mode=True, timeout=120)
        assert outcome["status"] == "processing", outcome
        assert outcome["outputs"] is None
        second = outcome["task_id"]
        assert poll(client, second)["status"] == "processing"
        cancel(client, second)
        assert wait_terminal(client, second, timeout=30)["status"] == "cancelled"


def test_sync_mode_timeout_while_still_queued_is_a_timeout_for_the_sdk(server):
    """A sync request whose job is still waiting behind another one when the sync wait ends must be
    reported as a sync timeout (status processing + "Sync mode timed out", or data.code 5004), which
    is what the SDK recognises; a bare ``created`` makes the SDK report a failure."""
    sdk = wavespeed.Client(api_key=server.key, base_url=server.url)
    with server.client() as client:
        running = submit(client, LONG)
        wait_sampling(client, running)
        try:
            outcome = sdk.run_no_throw(MODEL, {"image": IMAGE, **SMALL}, enable_sync_mode=True, timeout=120)
            assert outcome["task_id"] != "unknown", outcome
            waiting = outcome["task_id"]
            assert poll(client, waiting)["status"] in ("created", "processing")
            assert outcome["status"] == "processing", outcome
            assert "Sync mode timed out" in outcome["error"]
        finally:
            cancel(client, running)
            for item in client.get("/api/v3/predictions", params={"page_size": 5}).json()["data"]["items"]:
                if item["status"] not in TERMINAL:
                    cancel(client, item["id"])
            wait_terminal(client, running, timeout=30)
