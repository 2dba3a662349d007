"""Keys are isolated from each other, and file URLs are signed capabilities (real HTTP, real server)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from framepack_server.storage.signing import UrlSigner

from .conftest import SUBMIT, data_uri, smooth_png, wait_terminal, with_query

pytestmark = pytest.mark.slow

SMALL = {"prompt": "a quiet harbour", "resolution": "480p", "num_inference_steps": 4, "num_frames": 30}


def cli(data_dir, *args: str) -> list[str]:
    """Run `framepack keys ...` against the running server's data folder; its stdout lines."""
    done = subprocess.run(
        [sys.executable, "-m", "framepack_server.cli", "keys", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def create_key(data_dir, name: str) -> tuple[str, str]:
    """(plaintext key, key id) of a new key made with the CLI while the server runs."""
    lines = cli(data_dir, "create", "--name", name)
    match = re.search(r"\(key (\S+) ", lines[1])
    assert match, lines
    return lines[0].strip(), match.group(1)


@pytest.fixture(scope="module")
def key_b(server) -> str:
    return create_key(server.data_dir, "B")[0]


def test_another_key_cannot_read_list_or_cancel_a_prediction(server, key_b):
    with server.client() as a, server.client(key_b) as b:
        job_id = a.post(SUBMIT, json={"image": data_uri(), **SMALL}).json()["data"]["id"]
        # while A's job is queued or running, B tries everything it could do with the id
        response = b.post(f"/api/v3/predictions/{job_id}/cancel")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == 404
        for path in (f"/api/v3/predictions/{job_id}/result", f"/api/v3/predictions/{job_id}"):
            response = b.get(path)
            assert response.status_code == 404, response.text
            assert response.json()["code"] == 404
        listed = b.get("/api/v3/predictions", params={"page_size": 100}).json()["data"]
        assert job_id not in [item["id"] for item in listed["items"]]

        done = wait_terminal(a, job_id)
        assert done["status"] == "completed", done["error"]  # B's cancel did nothing

        # after completion B still sees nothing; B's own job is B's alone
        assert b.get(f"/api/v3/predictions/{job_id}/result").status_code == 404
        own = b.post(SUBMIT, json={"image": data_uri(1), **SMALL}).json()["data"]["id"]
        listed = b.get("/api/v3/predictions", params={"page_size": 100}).json()["data"]
        assert [item["id"] for item in listed["items"]] == [own]
        assert listed["total"] == 1
        assert a.get(f"/api/v3/predictions/{own}/result").status_code == 404
        assert a.post(f"/api/v3/predictions/{own}/cancel").status_code == 404
        assert own not in [item["id"] for item in a.get("/api/v3/predictions").json()["data"]["items"]]
        assert wait_terminal(b, own)["status"] == "completed"


def test_list_is_newest_first_with_items_and_pages(server):
    with server.client() as a:
        ids = [a.post(SUBMIT, json={"image": data_uri(seed), **SMALL}).json()["data"]["id"] for seed in range(3)]
        response = a.get("/api/v3/predictions", params={"page": 1, "page_size": 100})
        assert response.status_code == 200
        envelope = response.json()
        assert envelope["code"] == 200
        assert "error" not in envelope
        page = envelope["data"]
        listed = [item["id"] for item in page["items"]]
        assert listed[:3] == ids[::-1]
        assert page["total"] == len(listed) >= 3
        for item in page["items"]:
            assert {"id", "model", "status", "outputs", "created_at", "urls"} <= set(item)
        created = [item["created_at"] for item in page["items"]]
        assert created == sorted(created, reverse=True)

        second = a.get("/api/v3/predictions", params={"page": 2, "page_size": 1}).json()["data"]
        assert [item["id"] for item in second["items"]] == [ids[1]]
        assert (second["page"], second["page_size"]) == (2, 1)
        for bad in ({"page": 0}, {"page_size": 0}, {"page_size": 1000}):
            response = a.get("/api/v3/predictions", params=bad)
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["code"] == 400
        for job_id in ids:
            assert wait_terminal(a, job_id)["status"] == "completed"


def test_file_urls_are_signed_capabilities(server, key_b):
    signer = UrlSigner((server.data_dir / "secret.key").read_bytes())
    with server.client() as a:
        uploaded = a.post("/api/v3/upload", files={"file": ("p.png", smooth_png(7), "image/png")}).json()["data"]
        job_id = a.post(SUBMIT, json={"image": uploaded["url"], **SMALL}).json()["data"]["id"]
        output = wait_terminal(a, job_id)["outputs"][0]

        for url in (output, uploaded["url"]):
            assert httpx.get(url, timeout=30).status_code == 200  # the capability itself: no key needed
            # ... and held by anyone: key B fetches A's file through the URL
            assert httpx.get(url, headers={"Authorization": f"Bearer {key_b}"}, timeout=30).status_code == 200
            path = urlsplit(url).path
            query = dict(parse_qsl(urlsplit(url).query))
            refused = [
                urlsplit(url)._replace(query="").geturl(),  # no signature at all
                with_query(url, sig=None),
                with_query(url, expires=None),
                with_query(url, sig="0" * 64),
                with_query(url, expires=str(int(query["expires"]) - 1)),
                with_query(url, sig=query["sig"].upper()),
            ]
            for bad in refused:
                response = httpx.get(bad, timeout=30)
                assert response.status_code == 403, (bad, response.text)
                assert response.json()["code"] == 403
                # an API key is no substitute for the signature
                assert a.get(bad).status_code == 403
            # an expired signature made with the server's own secret is refused; a fresh one works
            base = url.split(path)[0]
            expired = f"{base}{path}?{signer.sign(path, 60, now=time.time() - 120)}"
            assert httpx.get(expired, timeout=30).status_code == 403
            fresh = f"{base}{path}?{signer.sign(path, 60)}"
            assert httpx.get(fresh, timeout=30).status_code == 200

        # a signature is bound to its path: the upload's signature does not open the output
        upload_query = urlsplit(uploaded["url"]).query
        swapped = urlsplit(output)._replace(query=upload_query).geturl()
        assert httpx.get(swapped, timeout=30).status_code == 403

        # an upload URL whose signature is broken is refused as an image, with a 400 naming the field
        response = a.post(SUBMIT, json={"image": with_query(uploaded["url"], sig="0" * 64), **SMALL})
        assert response.status_code == 400, response.text
        assert "image" in response.json()["message"]


def test_upload_put_url_is_signed(server):
    picture = smooth_png(8)
    with server.client() as a:
        ticket = a.post("/api/v3/media/uploads", json={"filename": "x.png", "size": len(picture)}).json()["data"]
    put_url = ticket["upload"]["url"]
    for bad in (urlsplit(put_url)._replace(query="").geturl(), with_query(put_url, sig="1" * 64)):
        response = httpx.put(bad, content=picture, timeout=30)
        assert response.status_code == 403, (bad, response.text)
    # the download URL of an upload that never arrived serves nothing
    assert httpx.get(ticket["download_url"], timeout=30).status_code == 404


def test_revoked_key_is_refused(server):
    key, key_id = create_key(server.data_dir, "C")
    with server.client(key) as c:
        assert c.get("/api/v3/predictions").status_code == 200
        cli(server.data_dir, "revoke", key_id)
        response = c.get("/api/v3/predictions")
        assert response.status_code == 401
        assert response.json()["code"] == 401
        assert c.post(SUBMIT, json={"image": data_uri(), **SMALL}).status_code == 401
