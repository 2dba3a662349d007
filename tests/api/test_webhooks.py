"""Webhook signing and delivery against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from framepack_server.api.webhooks import SIGNATURE_HEADER, WebhookSender, signature_header, verify_signature

SECRET = b"webhook-secret-0123456789abcdef"
PAYLOAD = {"id": "job-1", "status": "completed", "outputs": ["http://127.0.0.1/files/outputs/job-1.mp4"]}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next status in ``statuses`` (then 200) and records it."""

    url: str
    statuses: list[int] = field(default_factory=list)
    delay_s: list[float] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = state.statuses.pop(0) if state.statuses else 200
                delay = state.delay_s.pop(0) if state.delay_s else 0.0
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def sender(**kwargs: object) -> WebhookSender:
    return WebhookSender(SECRET, **{"backoff_s": 0.001, "timeout_s": 2.0, **kwargs})  # type: ignore[arg-type]


def test_delivery_is_signed_json(receiver: Receiver) -> None:
    assert sender().deliver(receiver.url, PAYLOAD)
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    assert req.path == "/hook"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"] == "framepack-server"
    assert json.loads(req.body) == PAYLOAD
    assert req.body == json.dumps(PAYLOAD, separators=(",", ":")).encode()
    assert verify_signature(SECRET, req.body, req.headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature(b"other-secret-0123456789abcdef", req.body, req.headers[SIGNATURE_HEADER.lower()])


def test_no_credentials_sent(receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # Even with proxy settings and a .netrc entry for the host in the environment.
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login user password secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert sender().deliver(receiver.url, PAYLOAD)
    headers = receiver.requests[0].headers
    assert "authorization" not in headers
    assert "proxy-authorization" not in headers
    assert not any("key" in name for name in headers)


def test_retry_after_two_503s(receiver: Receiver) -> None:
    receiver.statuses = [503, 503]
    assert sender(attempts=5).deliver(receiver.url, PAYLOAD)
    assert len(receiver.requests) == 3
    for req in receiver.requests:
        assert verify_signature(SECRET, req.body, req.headers[SIGNATURE_HEADER.lower()])


def test_retry_on_429(receiver: Receiver) -> None:
    receiver.statuses = [429]
    assert sender().deliver(receiver.url, PAYLOAD)
    assert len(receiver.requests) == 2


def test_gives_up_on_persistent_500(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    assert not sender(attempts=4).deliver(receiver.url, PAYLOAD)
    assert len(receiver.requests) == 4


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
def test_no_retry_on_client_error(receiver: Receiver, status: int) -> None:
    receiver.statuses = [status] * 5
    assert not sender().deliver(receiver.url, PAYLOAD)
    assert len(receiver.requests) == 1


def test_retry_after_timeout(receiver: Receiver) -> None:
    receiver.delay_s = [1.0]
    assert sender(timeout_s=0.2).deliver(receiver.url, PAYLOAD)
    assert len(receiver.requests) == 2


def test_connection_refused_retried_then_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: nothing listens there
    tries: list[int] = []
    s = sender(attempts=3)
    real_post = s._post

    def counting_post(url: str, body: bytes, headers: dict[str, str]) -> int:
        tries.append(1)
        return real_post(url, body, headers)

    monkeypatch.setattr(s, "_post", counting_post)
    assert not s.deliver(f"http://127.0.0.1:{port}/hook", PAYLOAD)
    assert len(tries) == 3


def test_exponential_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("framepack_server.api.webhooks.time.sleep", sleeps.append)
    s = WebhookSender(SECRET, attempts=4, backoff_s=0.5)
    monkeypatch.setattr(s, "_post", lambda url, body, headers: 502)
    assert not s.deliver("http://example.invalid/", PAYLOAD)
    assert sleeps == [0.5, 1.0, 2.0]


def test_bad_url_not_retried() -> None:
    s = sender()
    assert not s.deliver("ftp://127.0.0.1/hook", PAYLOAD)


def test_concurrent_deliveries(receiver: Receiver) -> None:
    s = sender()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: results.append(s.deliver(receiver.url, {"i": i}))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8
    assert sorted(json.loads(r.body)["i"] for r in receiver.requests) == list(range(8))


def test_signature_header_format() -> None:
    header = signature_header(SECRET, b"{}", 1_700_000_000)
    t, v1 = header.split(",")
    assert t == "t=1700000000"
    assert v1.startswith("v1=") and len(v1) == 3 + 64


def test_tampered_body_fails() -> None:
    body = b'{"id":"job-1","status":"completed"}'
    header = signature_header(SECRET, body, 1_700_000_000)
    assert verify_signature(SECRET, body, header, now=1_700_000_000)
    assert not verify_signature(SECRET, body.replace(b"completed", b"failed"), header, now=1_700_000_000)
    assert not verify_signature(SECRET, body + b" ", header, now=1_700_000_000)


def test_tampered_timestamp_fails() -> None:
    body = b"{}"
    header = signature_header(SECRET, body, 1_700_000_000).replace("t=1700000000", "t=1700000100")
    assert not verify_signature(SECRET, body, header, now=1_700_000_100)


def test_expired_timestamp_fails() -> None:
    body = b"{}"
    header = signature_header(SECRET, body, 1_700_000_000)
    assert verify_signature(SECRET, body, header, now=1_700_000_300)
    assert not verify_signature(SECRET, body, header, now=1_700_000_301)
    assert not verify_signature(SECRET, body, header, now=1_699_999_000)  # from the future
    assert verify_signature(SECRET, body, header, tolerance_s=3600, now=1_700_001_000)


def test_several_v1_any_matches() -> None:
    body = b"{}"
    good = signature_header(SECRET, body, 1_700_000_000)
    header = f"t=1700000000,v1={'0' * 64},{good.split(',')[1]}"
    assert verify_signature(SECRET, body, header, now=1_700_000_000)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=,v1=",
        "t=abc,v1=00",
        "v1=" + "0" * 64,
        "t=1700000000",
        "t=1700000000,v1=é",
        "t=1,t=2,v1=0",
    ],
)
def test_malformed_headers_fail(header: str | None) -> None:
    assert not verify_signature(SECRET, b"{}", header, now=1_700_000_000)
