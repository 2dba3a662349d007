"""Webhooks to a real receiver on 127.0.0.1, their signature, and base64 outputs (real server)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from framepack_server.api.webhooks import SIGNATURE_HEADER, verify_signature
from framepack_server.media.video import probe_video

from .conftest import SUBMIT, data_uri, wait_terminal

pytestmark = pytest.mark.slow

SMALL = {"prompt": "waves on a shore", "resolution": "480p", "num_inference_steps": 4, "num_frames": 30}


def total_jobs(client: httpx.Client) -> int:
    return client.get("/api/v3/predictions", params={"page_size": 1}).json()["data"]["total"]


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Delivery]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.deliveries) >= count, timeout), (
                f"{len(self.deliveries)} webhook deliveries, expected {count}"
            )
            return list(self.deliveries)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with state.arrived:
                state.deliveries.append(Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                state.arrived.notify_all()

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    state.url = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield state
    http.shutdown()
    http.server_close()


def secret_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "framepack_server.cli", "keys", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def webhook_secret(server) -> bytes:
    """The secret from `framepack keys webhook-secret --data-dir DIR`."""
    done = secret_cli("webhook-secret", "--data-dir", str(server.data_dir))
    assert done.returncode == 0, done.stderr
    return bytes.fromhex(done.stdout.strip().splitlines()[0])


def test_cli_prints_the_webhook_secret(server, webhook_secret):
    done = secret_cli("webhook-secret", "--data-dir", str(server.data_dir))
    assert done.returncode == 0, done.stderr
    assert bytes.fromhex(done.stdout.strip().splitlines()[0]) == webhook_secret


def test_webhook_delivers_the_signed_prediction(server, receiver, webhook_secret):
    hook = f"{receiver.url}/hooks/framepack?token=abc123"
    with server.client() as client:
        response = client.post(SUBMIT, params={"webhook": hook}, json={"image": data_uri(), **SMALL, "seed": 5})
        assert response.status_code == 200, response.text
        job_id = response.json()["data"]["id"]
        polled = wait_terminal(client, job_id)
    assert polled["status"] == "completed", polled["error"]

    delivery = receiver.wait_for(1)[0]
    assert delivery.path == "/hooks/framepack?token=abc123"
    assert delivery.headers["content-type"].startswith("application/json")
    assert "authorization" not in delivery.headers  # no API key ever leaves the server
    payload = json.loads(delivery.body)
    # the bare prediction object, not the {code, message, data} envelope
    assert "data" not in payload and "code" not in payload
    assert payload["id"] == job_id
    assert payload["status"] == "completed"
    assert payload["model"] == "wavespeed-ai/framepack"
    assert payload["error"] == ""
    assert len(payload["outputs"]) == 1
    assert payload["urls"]["get"].endswith(f"/api/v3/predictions/{job_id}/result")
    assert payload["input"]["prompt"] == SMALL["prompt"]
    assert "progress" not in payload or payload["progress"] is None
    fetched = httpx.get(payload["outputs"][0], timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"].startswith("video/mp4")

    header = delivery.headers[SIGNATURE_HEADER.lower()]
    assert verify_signature(webhook_secret, delivery.body, header)
    assert not verify_signature(webhook_secret, delivery.body + b" ", header)
    assert not verify_signature(b"another secret, not the server's", delivery.body, header)

    time.sleep(1.5)  # the dispatcher polls every 0.5 s: a second delivery would have come by now
    assert len(receiver.deliveries) == 1


def test_webhook_reports_a_failed_job(server, receiver, webhook_secret):
    with server.client() as client:
        response = client.post(
            SUBMIT, params={"webhook": receiver.url + "/failed"}, json={"image": f"{server.url}/missing.png", **SMALL}
        )
        assert response.status_code == 200, response.text
        job_id = response.json()["data"]["id"]
        assert wait_terminal(client, job_id)["status"] == "failed"
    delivery = receiver.wait_for(1)[0]
    payload = json.loads(delivery.body)
    assert payload["id"] == job_id
    assert payload["status"] == "failed"
    assert payload["error"]
    assert payload["outputs"] == []
    assert verify_signature(webhook_secret, delivery.body, delivery.headers[SIGNATURE_HEADER.lower()])


def decode_video(text: str, path) -> object:
    assert not text.startswith(("data:", "http://", "https://"))
    raw = base64.b64decode(text, validate=True)  # naked standard base64
    path.write_bytes(raw)
    return probe_video(path)


def test_base64_output_when_polling_and_in_sync_mode(server, tmp_path):
    with server.client() as client:
        response = client.post(SUBMIT, json={"image": data_uri(1), **SMALL, "enable_base64_output": True})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["outputs"] == []
        done = wait_terminal(client, response.json()["data"]["id"])
        assert done["status"] == "completed", done["error"]
        assert len(done["outputs"]) == 1
        info = decode_video(done["outputs"][0], tmp_path / "polled.mp4")
        assert (info.frames, info.width, info.height) == (30, 80, 48)
        # the alias path answers the same
        alias = client.get(f"/api/v3/predictions/{done['id']}").json()["data"]
        assert alias["outputs"] == done["outputs"]

        response = client.post(
            SUBMIT,
            json={"image": data_uri(2), **SMALL, "enable_base64_output": True, "enable_sync_mode": True},
            timeout=300,
        )
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["status"] == "completed", data["error"]
        info = decode_video(data["outputs"][0], tmp_path / "sync.mp4")
        assert (info.frames, info.width, info.height) == (30, 80, 48)


def test_webhook_with_base64_output_is_400(server, receiver):
    with server.client() as client:
        before = total_jobs(client)
        response = client.post(
            SUBMIT, params={"webhook": receiver.url}, json={"image": data_uri(), **SMALL, "enable_base64_output": True}
        )
        assert response.status_code == 400, response.text
        envelope = response.json()
        assert envelope["code"] == 400
        assert "base64" in envelope["message"]
        assert total_jobs(client) == before


@pytest.mark.parametrize("hook", ["ftp://127.0.0.1/hook", "not a url", "file:///etc/passwd"])
def test_webhook_must_be_an_http_url(server, hook):
    with server.client() as client:
        before = total_jobs(client)
        response = client.post(SUBMIT, params={"webhook": hook}, json={"image": data_uri(), **SMALL})
        assert response.status_code == 400, response.text
        assert "webhook" in response.json()["message"]
        assert total_jobs(client) == before
