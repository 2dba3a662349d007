"""The WaveSpeed v3 flow over real HTTP against `framepack serve --model-family tiny`.

Plain httpx and the official `wavespeed` SDK talk to a server process on 127.0.0.1: submit, poll
(both result paths), progress, sync mode, downloads by signed URL, the three upload shapes, failed
jobs, 404s, 400s that name their field, 401s, and the health and docs pages.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import wavespeed

from framepack_server.media.video import probe_video

from .conftest import MODEL, SUBMIT, TERMINAL, data_uri, smooth_png, wait_terminal, with_query

pytestmark = pytest.mark.slow

SMALL = {"prompt": "a calm lake at dawn", "resolution": "480p", "num_inference_steps": 4, "num_frames": 30}


def download_video(url: str, tmp_path, name: str = "out.mp4"):
    """GET ``url`` bare (no Authorization header, as MCP does) and probe the MP4."""
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("video/mp4")
    path = tmp_path / name
    path.write_bytes(response.content)
    return probe_video(path)


def total_jobs(client: httpx.Client) -> int:
    response = client.get("/api/v3/predictions", params={"page_size": 1})
    assert response.status_code == 200, response.text
    return response.json()["data"]["total"]


def sdk(server) -> wavespeed.Client:
    return wavespeed.Client(api_key=server.key, base_url=server.url, max_connection_retries=0)


# ---- no key needed -----------------------------------------------------------------------------


def test_health_and_docs_need_no_key(server):
    health = httpx.get(server.url + "/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    docs = httpx.get(server.url + "/docs", timeout=10)
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    schema = httpx.get(server.url + "/openapi.json", timeout=10)
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v3/predictions/{job_id}/result" in paths
    assert "/api/v3/media/uploads" in paths


@pytest.mark.parametrize("authorization", [None, "Bearer fp_not-a-real-key", "Basic dXNlcjpwYXNz", "Bearer"])
def test_api_routes_refuse_requests_without_a_valid_key(server, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    body = {"image": data_uri(), **SMALL}
    calls = [
        ("POST", SUBMIT, {"json": body}),
        ("GET", "/api/v3/predictions/0123/result", {}),
        ("GET", "/api/v3/predictions/0123", {}),
        ("GET", "/api/v3/predictions", {}),
        ("POST", "/api/v3/predictions/0123/cancel", {}),
        ("POST", "/api/v3/media/uploads", {"json": {"filename": "a.png", "size": 10}}),
        ("POST", "/api/v3/media/upload/binary", {"files": {"file": ("a.png", smooth_png(), "image/png")}}),
        ("POST", "/api/v3/upload", {"files": {"file": ("a.png", smooth_png(), "image/png")}}),
    ]
    with server.client() as keyed:
        before = total_jobs(keyed)
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for method, path, kwargs in calls:
            response = client.request(method, path, **kwargs)
            assert response.status_code == 401, (method, path, response.text)
            envelope = response.json()
            assert envelope["code"] == 401, (method, path, envelope)
            assert isinstance(envelope["message"], str) and envelope["message"], (method, path, envelope)
    with server.client() as keyed:
        assert total_jobs(keyed) == before  # the unauthenticated submit queued nothing


# ---- the full asynchronous flow ----------------------------------------------------------------


def test_submit_poll_progress_and_download(server, tmp_path):
    body = {
        "image": data_uri(1),
        "prompt": "a red kite over green hills",
        "resolution": "480p",
        "num_inference_steps": 8,
        "num_frames": 150,
        "seed": 7,
        # fields other clients send (wavespeed-mcp, older scripts, newer API versions): ignored
        "loras": [{"path": "x", "scale": 1}],
        "size": "832*480",
        "duration": 5,
        "flow_shift": 3.0,
        "enable_safety_checker": True,
        "some_future_option": {"nested": [1, 2, 3]},
    }
    with httpx.Client(base_url=server.url, timeout=60) as client:  # plain httpx, header set per request
        headers = server.headers
        response = client.post(SUBMIT, json=body, headers=headers)
        assert response.status_code == 200, response.text
        envelope = response.json()
        assert envelope["code"] == 200
        assert envelope["message"] == "success"
        assert "error" not in envelope
        submitted = envelope["data"]
        assert submitted["status"] == "created"
        assert submitted["outputs"] == []
        assert submitted["error"] == ""
        assert submitted["model"] == MODEL
        job_id = submitted["id"]
        assert submitted["urls"]["get"] == f"{server.url}/api/v3/predictions/{job_id}/result"
        assert "loras" not in (submitted.get("input") or {})

        paths = [f"/api/v3/predictions/{job_id}/result", f"/api/v3/predictions/{job_id}"]
        statuses: list[str] = []
        progress_seen: list[dict] = []
        deadline = time.monotonic() + 300
        n = 0
        while True:
            assert time.monotonic() < deadline, f"job did not finish; statuses {statuses[-5:]}"
            poll = client.get(paths[n % 2], headers=headers)
            n += 1
            assert poll.status_code == 200, poll.text
            envelope = poll.json()
            assert envelope["code"] == 200
            assert "error" not in envelope
            data = envelope["data"]
            assert data["id"] == job_id
            if not statuses or statuses[-1] != data["status"]:
                statuses.append(data["status"])
            if data["status"] == "processing" and data.get("progress"):
                progress_seen.append(data["progress"])
            if data["status"] in TERMINAL:
                break
            time.sleep(0.05)

    assert data["status"] == "completed", data["error"]
    assert statuses[-1] == "completed"
    assert "processing" in statuses
    assert set(statuses) <= {"created", "processing", "completed"}
    # the progress extension, seen while processing
    assert progress_seen, "no progress was reported while the job was processing"
    for progress in progress_seen:
        assert {"phase", "section", "sections", "step", "steps"} <= set(progress)
        assert progress["sections"] == 5  # 150 frames, latent window 9: ceil(149 / 36)
        assert 0 <= progress["section"] <= progress["sections"]
        if progress["phase"] == "sampling":
            assert progress["steps"] == 8
            assert 1 <= progress["step"] <= 8
            assert progress["section"] >= 1
    assert any(p["phase"] == "sampling" for p in progress_seen)
    # done: timings, outputs, no progress any more
    assert data["timings"]["inference"] > 0
    assert data["error"] == ""
    assert data.get("progress") is None
    assert len(data["outputs"]) == 1
    assert data["has_nsfw_contents"] == [False]
    assert data["seed"] == 7
    url = data["outputs"][0]
    assert url.startswith(server.url + "/")

    info = download_video(url, tmp_path)
    assert info.frames == 150
    assert info.fps == pytest.approx(30.0)
    assert (info.width, info.height) == (80, 48)

    # the URL is a signed capability: change the signature and it is refused
    sig = dict(parse_qsl(urlsplit(url).query))["sig"]
    tampered = with_query(url, sig=sig[:-1] + ("0" if sig[-1] != "0" else "1"))
    refused = httpx.get(tampered, timeout=30)
    assert refused.status_code == 403
    assert refused.json()["code"] == 403
    # ... and so is another expiry with the same signature
    expires = int(dict(parse_qsl(urlsplit(url).query))["expires"])
    assert httpx.get(with_query(url, expires=str(expires + 3600)), timeout=30).status_code == 403


def test_sync_mode_returns_the_finished_prediction(server, tmp_path):
    with server.client() as client:
        response = client.post(SUBMIT, json={"image": data_uri(2), **SMALL, "enable_sync_mode": True}, timeout=300)
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["code"] == 200
    assert "error" not in envelope
    data = envelope["data"]
    assert data["status"] == "completed", data["error"]
    assert data["error"] == ""
    assert len(data["outputs"]) == 1
    assert data["timings"]["inference"] > 0
    info = download_video(data["outputs"][0], tmp_path)
    assert info.frames == 30
    assert (info.width, info.height) == (80, 48)


# ---- the official SDK --------------------------------------------------------------------------


def test_upload_ticket_then_put_without_authorization(server):
    picture = smooth_png(5)
    with server.client() as client:
        response = client.post(
            "/api/v3/media/uploads", json={"filename": "pic.png", "size": len(picture), "content_type": "image/png"}
        )
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["code"] == 200
    ticket = envelope["data"]
    assert ticket["upload"]["method"] == "PUT"
    assert ticket["upload"]["url"].startswith(server.url + "/")
    put = httpx.put(ticket["upload"]["url"], content=picture, headers=ticket["upload"]["headers"], timeout=30)
    assert 200 <= put.status_code < 300, put.text
    fetched = httpx.get(ticket["download_url"], timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == picture


def test_sdk_run_async_and_sync(server, tmp_path):
    client = sdk(server)
    result = client.run(MODEL, {"image": data_uri(3), **SMALL, "seed": 11}, timeout=300, poll_interval=0.2)
    assert set(result) == {"outputs"}
    assert len(result["outputs"]) == 1
    info = download_video(result["outputs"][0], tmp_path, "async.mp4")
    assert (info.frames, info.width, info.height) == (30, 80, 48)

    result = client.run(MODEL, {"image": data_uri(3), **SMALL, "seed": 11}, timeout=300, enable_sync_mode=True)
    assert len(result["outputs"]) == 1
    info = download_video(result["outputs"][0], tmp_path, "sync.mp4")
    assert (info.frames, info.width, info.height) == (30, 80, 48)


def test_sdk_upload_then_run_with_the_uploaded_url(server, tmp_path):
    picture = tmp_path / "start frame.png"
    picture.write_bytes(smooth_png(3))
    client = sdk(server)

    url = client.upload(str(picture))  # ticket + PUT (the PUT carries no Authorization header)
    assert url.startswith(server.url + "/")
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == picture.read_bytes()

    result = client.run(MODEL, {"image": url, **SMALL, "seed": 11}, timeout=300, poll_interval=0.2)
    assert len(result["outputs"]) == 1
    info = download_video(result["outputs"][0], tmp_path, "uploaded.mp4")
    assert (info.frames, info.width, info.height) == (30, 80, 48)


def test_sdk_get_result_gives_the_whole_envelope(server):
    client = sdk(server)
    with server.client() as http:
        job_id = http.post(SUBMIT, json={"image": data_uri(), **SMALL}).json()["data"]["id"]
        wait_terminal(http, job_id)
    full = client.get_result(job_id)
    assert full["code"] == 200
    assert full["message"] == "success"
    assert full["data"]["id"] == job_id
    assert full["data"]["status"] == "completed"


@pytest.mark.parametrize("path", ["/api/v3/media/upload/binary", "/api/v3/upload"])
def test_legacy_multipart_upload_url_works_as_image(server, path, tmp_path):
    picture = smooth_png(4)
    with server.client() as client:
        response = client.post(path, files={"file": ("my picture.png", picture, "image/png")})
        assert response.status_code == 200, response.text
        envelope = response.json()
        assert envelope["code"] == 200
        assert "error" not in envelope
        data = envelope["data"]
        assert data["download_url"] and data["url"]
        assert data["size"] == len(picture)
        assert data["type"] == "image"
        for url in {data["download_url"], data["url"]}:
            fetched = httpx.get(url, timeout=30)  # no Authorization header
            assert fetched.status_code == 200
            assert fetched.content == picture

        submitted = client.post(SUBMIT, json={"image": data["url"], **SMALL})
        assert submitted.status_code == 200, submitted.text
        done = wait_terminal(client, submitted.json()["data"]["id"])
    assert done["status"] == "completed", done["error"]
    info = download_video(done["outputs"][0], tmp_path)
    assert (info.frames, info.width, info.height) == (30, 80, 48)


# ---- failures ----------------------------------------------------------------------------------


def test_failing_job_ends_failed_with_a_readable_error(server):
    missing = f"{server.url}/no/such/picture.png"  # our own server answers 404 here
    with server.client() as client:
        response = client.post(SUBMIT, json={"image": missing, **SMALL})
        assert response.status_code == 200, response.text
        job_id = response.json()["data"]["id"]
        data = wait_terminal(client, job_id)
        poll = client.get(f"/api/v3/predictions/{job_id}")
    assert data["status"] == "failed"
    assert data["outputs"] == []
    assert "image" in data["error"] and "404" in data["error"], data["error"]
    assert poll.status_code == 200
    assert poll.json()["code"] == 200
    assert "error" not in poll.json()
    assert poll.json()["data"]["status"] == "failed"

    client = sdk(server)
    with pytest.raises(RuntimeError, match="failed") as raised:
        client.run(MODEL, {"image": missing, **SMALL}, timeout=120, poll_interval=0.2)
    assert "404" in str(raised.value)
    outcome = client.run_no_throw(MODEL, {"image": missing, **SMALL}, timeout=120, enable_sync_mode=True)
    assert outcome["status"] == "failed"
    assert outcome["outputs"] is None
    assert "404" in outcome["error"]


def test_unknown_prediction_is_404(server):
    unknown = "0" * 32
    with server.client() as client:
        for path in (f"/api/v3/predictions/{unknown}/result", f"/api/v3/predictions/{unknown}"):
            response = client.get(path)
            assert response.status_code == 404, response.text
            assert response.json()["code"] == 404
            assert response.json()["message"]
        response = client.post(f"/api/v3/predictions/{unknown}/cancel")
        assert response.status_code == 404
        response = client.post("/api/v3/wavespeed-ai/no-such-model", json={"image": data_uri(), **SMALL})
        assert response.status_code == 404
        assert response.json()["code"] == 404

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="404"):
        sdk(server).get_result(unknown)
    assert time.monotonic() - started < 10  # a 404 is not retried


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"num_frames": 10}, "num_frames"),
        ({"num_frames": 100_000}, "num_frames"),
        ({"num_frames": "many"}, "num_frames"),
        ({"num_frames": 45.5}, "num_frames"),
        ({"num_inference_steps": 200}, "num_inference_steps"),
        ({"num_inference_steps": [4]}, "num_inference_steps"),
        ({"seed": -7}, "seed"),
        ({"seed": "lucky"}, "seed"),
        ({"guidance_scale": 99}, "guidance_scale"),
        ({"resolution": "1080p"}, "resolution"),
        ({"aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"prompt": None}, "prompt"),
        ({"image": None}, "image"),
        ({"image": "definitely not an image"}, "image"),
        ({"image": "data:image/png;base64,aGVsbG8gd29ybGQ="}, "image"),
        ({"image": "ftp://example.invalid/a.png"}, "image"),
        ({"enable_sync_mode": "perhaps"}, "enable_sync_mode"),
    ],
)
def test_bad_input_is_400_naming_the_field(server, change, field):
    body = {"image": data_uri(), **SMALL, **change}
    body = {k: v for k, v in body.items() if v is not None}
    with server.client() as client:
        before = total_jobs(client)
        response = client.post(SUBMIT, json=body)
        assert response.status_code == 400, response.text
        envelope = response.json()
        assert envelope["code"] == 400
        assert field in envelope["message"], envelope
        assert "data" not in envelope
        assert total_jobs(client) == before  # nothing was queued


def test_unknown_routes_answer_in_the_error_envelope(server):
    """Every error, a router 404 or 405 included, is ``{"code", "message"}`` (not FastAPI's ``detail``)."""
    with server.client() as client:
        for method, path, status in [
            ("GET", "/api/v3/no/such/route/here", 404),
            ("GET", "/no-such-page", 404),
            ("DELETE", "/api/v3/predictions/0123/result", 405),
        ]:
            response = client.request(method, path)
            assert response.status_code == status, (method, path, response.text)
            envelope = response.json()
            assert envelope.get("code") == status, (method, path, envelope)
            assert envelope.get("message"), (method, path, envelope)


def test_body_that_is_not_a_json_object_is_400(server):
    with server.client() as client:
        for content in (b"[1, 2, 3]", b"not json at all", b'"a string"'):
            response = client.post(SUBMIT, content=content, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (content, response.text)
            assert response.json()["code"] == 400


def test_sdk_raises_on_a_400(server):
    with pytest.raises(RuntimeError, match="400"):
        sdk(server).run(MODEL, {"image": data_uri(), **SMALL, "num_frames": 5}, timeout=60)
