"""Safe media input over real HTTP: private targets refused at submission, limits enforced."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

pytestmark = pytest.mark.slow


class _Counting(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def target():
    """A loopback server that counts every request it gets: it must get none."""
    _Counting.hits = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, settings):
    """A server with no allow-list: the production default."""
    from .conftest import Server, free_port

    srv = Server(tmp_path_factory.mktemp("guarded") / "data", settings.cache_dir, free_port(),
                 {"FRAMEPACK_URL_ALLOW": "", "FRAMEPACK_RATE_LIMIT": "40/minute",
                  "FRAMEPACK_MAX_QUEUED_PER_KEY": "2", "FRAMEPACK_MAX_BODY_BYTES": "300000",
                  "FRAMEPACK_RUN_WORKER": "false"}).start()  # fmt: skip
    yield srv
    srv.stop()


SPELLINGS = ["127.0.0.1", "localhost", "127.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001",
             "[::1]", "[::ffff:127.0.0.1]"]  # fmt: skip


@pytest.mark.parametrize("host", SPELLINGS)
def test_image_urls_to_loopback_are_refused_without_connecting(guarded, target, host):
    with guarded.client() as client:
        r = client.post(
            "/api/v3/wavespeed-ai/framepack", json={"image": f"http://{host}:{target}/a.png", "prompt": "x"}
        )
    assert r.status_code == 400 and r.json()["field"] == "image", r.text
    assert "private or reserved" in r.json()["message"]
    assert _Counting.hits == 0


@pytest.mark.parametrize("host", ["169.254.169.254", "10.0.0.5", "192.168.1.1", "100.64.1.1", "[fd00::1]"])
def test_image_urls_to_private_networks_are_refused(guarded, host):
    with guarded.client() as client:
        r = client.post("/api/v3/wavespeed-ai/framepack", json={"image": f"http://{host}/a.png", "prompt": "x"})
    assert r.status_code == 400 and r.json()["field"] == "image", r.text


def test_webhook_to_loopback_is_refused(guarded, target):
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "blue").save(png, format="PNG")
    body = {"image": base64.b64encode(png.getvalue()).decode(), "prompt": "x"}
    with guarded.client() as client:
        r = client.post(f"/api/v3/wavespeed-ai/framepack?webhook=http://127.0.0.1:{target}/hook", json=body)
    assert r.status_code == 400 and r.json()["field"] == "webhook", r.text
    assert _Counting.hits == 0


def test_limits_body_queue_and_rate(guarded):
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "blue").save(png, format="PNG")
    small = {"image": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode(), "prompt": "x"}
    with guarded.client() as client:
        big = client.post("/api/v3/wavespeed-ai/framepack", json={**small, "prompt": "x" * 400_000})
        assert big.status_code == 413 and big.json()["field"] == "body"
        long_prompt = client.post("/api/v3/wavespeed-ai/framepack", json={**small, "prompt": "x" * 10_001})
        assert long_prompt.status_code == 400 and long_prompt.json()["field"] == "prompt"
        # No worker runs here, so jobs stay queued: the third is over the cap of 2.
        codes = [client.post("/api/v3/wavespeed-ai/framepack", json=small).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        statuses = [client.get("/api/v3/predictions").status_code for _ in range(40)]
        assert 429 in statuses
        refused = client.get("/api/v3/predictions")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["code"] == 429
    assert guarded.client().get("/health").status_code == 200  # health is not rate-limited
