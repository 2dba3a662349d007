"""Tests for the guarded fetcher: refused targets never see a connection; allowed ones work.

Only local servers on 127.0.0.1 are used; made-up names go through a fake resolver, and a
guard on ``socket.create_connection`` records every connection and blocks any that is not
to loopback (so that a broken guard cannot send traffic anywhere).
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import pytest

from framepack_server.errors import InputError
from framepack_server.media import fetch as fetch_module
from framepack_server.media.fetch import FetchPolicy, check_url, fetch, is_refused_address, post_json

NAMES = {
    "images.example": ["127.0.0.1"],
    "other.example": ["127.0.0.1"],
    "localhost": ["127.0.0.1", "::1"],
    "evil.example": ["10.0.0.5"],
    "lan.example": ["192.168.1.1"],
    "meta.example": ["169.254.169.254"],
    "cgnat.example": ["100.64.1.1"],
    "loop6.example": ["::1"],
    "ula.example": ["fd00::1"],
    "mapped.example": ["::ffff:10.0.0.1"],
    "mixed.example": ["93.184.216.34", "10.0.0.1"],
    "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "two.example": ["127.0.0.2", "127.0.0.1"],
    "junk.example": ["0x7f.1"],
}
LOCAL = FetchPolicy(allow=("127.0.0.0/8",), connect_timeout=2.0, read_timeout=2.0)


def resolver(host: str, port: int) -> list[str]:
    if host not in NAMES:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return list(NAMES[host])


# ----------------------------------------------------------------------------- local servers


class Seen(NamedTuple):
    method: str
    path: str
    headers: Message
    body: bytes


Route = Callable[[BaseHTTPRequestHandler], None]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.accepted = 0
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def get_request(self):  # type: ignore[no-untyped-def]
        conn = super().get_request()
        self.accepted += 1
        return conn

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (timeouts, byte cap) breaks the pipe: expected here


class Handler(BaseHTTPRequestHandler):
    server: Server

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append(Seen(self.command, self.path, self.headers, self.rfile.read(length)))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
        else:
            route(self)

    do_GET = do_POST = handle_any

    def log_message(self, *args: object) -> None:
        pass


def respond(
    body: bytes = b"", status: int = 200, headers: dict[str, str] | None = None, *, length: bool = True
) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        if length:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def redirect(location: str) -> Route:
    return respond(status=302, headers={"Location": location, "Set-Cookie": "session=secret"})


def serve(srv: Server) -> Iterator[Server]:
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve(Server())


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection httpx opens; any to a non-loopback address is blocked."""
    made: list[tuple[str, int]] = []
    real = socket.create_connection

    def guarded(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        made.append((address[0], address[1]))
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise OSError(f"test guard: no connection to {address[0]}")
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", guarded)
    return made


def assert_error(excinfo: pytest.ExceptionInfo[InputError], *words: str, field: str = "image") -> None:
    assert excinfo.value.field == field
    for word in words:
        assert word in excinfo.value.message, excinfo.value.message


# ----------------------------------------------------------------------------- refused targets

REFUSED_HOSTS = [
    "127.0.0.1", "localhost", "127.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "[::1]",
    "[::ffff:127.0.0.1]", "[0:0:0:0:0:ffff:7f00:1]", "10.0.0.5", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.1.1", "224.0.0.1", "0.0.0.0", "240.0.0.1", "[fd00::1]", "[fe80::1]", "[fec0::1]", "[64:ff9b::a00:5]",
    "evil.example", "lan.example", "meta.example", "cgnat.example", "loop6.example", "ula.example",
    "mapped.example", "mixed.example",
]  # fmt: skip


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_refused_before_connecting(host: str, server: Server, connections: list) -> None:
    server.routes["/x"] = respond(b"secret")
    with pytest.raises(InputError) as excinfo:
        fetch(f"http://{host}:{server.port}/x", "image", resolver=resolver)
    assert_error(excinfo, "refused:", "private or reserved address")
    assert connections == []
    assert server.accepted == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "0x7f.1", "[::1]", "localhost"])
def test_refused_with_the_default_resolver(host: str, server: Server, connections: list) -> None:
    with pytest.raises(InputError) as excinfo:
        post_json(f"http://{host}:{server.port}/", "webhook_url", FetchPolicy(), b"{}", {})
    assert_error(excinfo, "refused:", field="webhook_url")
    assert connections == [] and server.accepted == 0


def test_allow_list_covers_only_what_it_lists() -> None:
    for host in ("evil.example", "localhost", "meta.example"):  # localhost: ::1 is not in 127.0.0.0/8
        with pytest.raises(InputError, match="refused"):
            check_url(f"http://{host}/", "image", LOCAL, resolver)
    assert check_url("http://evil.example/", "image", FetchPolicy(allow=("evil.example",)), resolver)[1] == ["10.0.0.5"]
    assert check_url("https://public.example/a", "image", resolver=resolver) == (
        "public.example",
        NAMES["public.example"],
    )
    assert check_url("http://0x7f.1:8/", "image", FetchPolicy(allow=("127.0.0.1",))) == ("0x7f.1", ["127.0.0.1"])


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://images.example/a.png", ["not an http(s) URL"]),
        ("file:///etc/passwd", ["not an http(s) URL"]),
        ("images.example/a.png", ["not an http(s) URL"]),
        ("http://user:pass@images.example/", ["user names and passwords"]),
        ("http://user@images.example/", ["user names and passwords"]),
        ("http://nowhere.example/", ["could not resolve host nowhere.example"]),
        ("http://images.example:99999/", ["invalid URL"]),
        ("http://[::1/", ["invalid URL"]),
        ("http://a b/", ["invalid host"]),
    ],
)
def test_bad_urls(url: str, words: list[str], connections: list) -> None:
    with pytest.raises(InputError) as excinfo:
        fetch(url, "image", LOCAL, resolver=resolver)
    assert_error(excinfo, *words)
    assert connections == []


def test_is_refused_address() -> None:
    for ip in ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]:
        assert not is_refused_address(ip), ip
    refused = ["127.0.0.1", "::1", "::", "::ffff:127.0.0.1", "::127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1"]
    refused += ["2002:a00:1::", "fec0::1", "fc00::1", "fe80::1%eth0", "ff02::1", "100.127.255.254", "198.18.0.1"]
    refused += ["192.0.2.1", "255.255.255.255", "not an address"]
    for ip in refused:
        assert is_refused_address(ip), ip


# ----------------------------------------------------------------------------- allowed fetches


def test_fetch_connects_to_the_checked_address_with_the_original_host(server: Server, connections: list) -> None:
    server.routes["/img"] = respond(b"\x89PNG" + bytes(range(256)) * 40)
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:  # a second answer would be private
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.0.0.5"]

    headers = {"Authorization": "Bearer x", "Cookie": "a=b", "Host": "evil.example", "Accept": "image/*"}
    data = fetch(f"http://images.example:{server.port}/img", "image", LOCAL, resolver=rebinding, headers=headers)
    assert data == b"\x89PNG" + bytes(range(256)) * 40
    assert calls == ["images.example"]
    assert connections == [("127.0.0.1", server.port)]  # httpx never resolved the name itself
    (seen,) = server.seen
    assert seen.headers["Host"] == f"images.example:{server.port}"
    assert seen.headers["Accept"] == "image/*"
    assert seen.headers["Accept-Encoding"] == "identity"
    assert "Authorization" not in seen.headers and "Cookie" not in seen.headers


def test_next_checked_address_when_the_first_refuses(server: Server, connections: list) -> None:
    server.routes["/img"] = respond(b"second")
    assert fetch(f"http://two.example:{server.port}/img", "image", LOCAL, resolver=resolver) == b"second"
    assert connections == [("127.0.0.2", server.port), ("127.0.0.1", server.port)]
    with pytest.raises(InputError, match="not an IP address"):  # a resolver must answer with addresses
        check_url("http://junk.example/", "image", LOCAL, resolver)


def test_redirect_chain(server: Server, connections: list) -> None:
    server.routes["/start"] = redirect("/middle?x=1")  # relative
    server.routes["/middle?x=1"] = redirect(f"http://other.example:{server.port}/img")
    server.routes["/img"] = respond(b"picture")
    assert fetch(f"http://images.example:{server.port}/start", "image", LOCAL, resolver=resolver) == b"picture"
    assert [s.path for s in server.seen] == ["/start", "/middle?x=1", "/img"]
    hosts = [s.headers["Host"] for s in server.seen]
    assert hosts == [f"images.example:{server.port}"] * 2 + [f"other.example:{server.port}"]
    assert all("Cookie" not in s.headers for s in server.seen)  # Set-Cookie of a hop is not sent back
    assert len(connections) == 3


def test_too_many_redirects(server: Server) -> None:
    for i in range(1, 7):
        server.routes[f"/r{i}"] = redirect(f"/r{i - 1}")
    server.routes["/r0"] = respond(b"end")
    url = f"http://images.example:{server.port}/r"
    assert fetch(url + "5", "image", LOCAL, resolver=resolver) == b"end"  # 5 hops
    server.seen.clear()
    with pytest.raises(InputError) as excinfo:
        fetch(url + "6", "image", LOCAL, resolver=resolver)
    assert_error(excinfo, "too many redirects")
    assert len(server.seen) == 6  # the 7th request was never sent


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("http://10.0.0.5:{port}/", ["refused: 10.0.0.5 is"]),
        ("http://meta.example/latest/meta-data/", ["refused: meta.example resolves to", "169.254.169.254"]),
        ("http://[::ffff:a00:5]:{port}/", ["refused"]),
        ("ftp://images.example/a.png", ["not an http(s) URL"]),
    ],
)
def test_redirect_to_a_refused_target(location: str, words: list[str], server: Server, connections: list) -> None:
    server.routes["/go"] = redirect(location.format(port=server.port))
    with pytest.raises(InputError) as excinfo:
        fetch(f"http://images.example:{server.port}/go", "image", LOCAL, resolver=resolver)
    assert_error(excinfo, *words)
    assert connections == [("127.0.0.1", server.port)]


def test_byte_cap(server: Server) -> None:
    server.routes["/declared"] = respond(b"x", headers={"Content-Length": "5000"}, length=False)
    server.routes["/streamed"] = respond(b"x" * 5000, length=False)  # HTTP/1.0, ends at close
    server.routes["/fits"] = respond(b"x" * 1000, length=False)
    policy = FetchPolicy(allow=LOCAL.allow, max_bytes=1000)
    url = f"http://images.example:{server.port}"
    for path in ("/declared", "/streamed"):
        with pytest.raises(InputError) as excinfo:
            fetch(url + path, "image", policy, resolver=resolver)
        assert_error(excinfo, "larger than 1000 bytes")
    assert fetch(url + "/fits", "image", policy, resolver=resolver) == b"x" * 1000


def test_timeouts(server: Server) -> None:
    def slow(h: BaseHTTPRequestHandler) -> None:
        time.sleep(1.0)
        respond(b"late")(h)

    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        for _ in range(10):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)

    server.routes["/slow"] = slow
    server.routes["/drip"] = drip
    url = f"http://images.example:{server.port}"
    with pytest.raises(InputError) as excinfo:
        fetch(url + "/slow", "image", FetchPolicy(allow=LOCAL.allow, read_timeout=0.2), resolver=resolver)
    assert_error(excinfo, "timed out")
    with pytest.raises(InputError) as excinfo:
        fetch(url + "/drip", "image", FetchPolicy(allow=LOCAL.allow, total_timeout=0.3), resolver=resolver)
    assert_error(excinfo, "timed out")


def test_http_errors(server: Server) -> None:
    server.routes["/gzip"] = respond(b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    url = f"http://images.example:{server.port}"
    with pytest.raises(InputError) as excinfo:
        fetch(url + "/missing", "last_image", LOCAL, resolver=resolver)
    assert_error(excinfo, "HTTP 404", field="last_image")
    with pytest.raises(InputError) as excinfo:
        fetch(url + "/gzip", "image", LOCAL, resolver=resolver)
    assert_error(excinfo, "compressed")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(InputError) as excinfo:
        fetch(f"http://images.example:{port}/", "image", LOCAL, resolver=resolver)
    assert_error(excinfo, "could not connect")


# ----------------------------------------------------------------------------- webhooks


def test_post_json(server: Server, connections: list) -> None:
    server.routes["/hook"] = respond(status=204)
    server.routes["/moved"] = redirect("/hook")
    url = f"http://images.example:{server.port}"
    body = b'{"job": "abc", "status": "done"}'
    assert post_json(url + "/hook", "webhook_url", LOCAL, body, {"X-Signature": "s"}, resolver) == 204
    (seen,) = server.seen
    assert (seen.method, seen.body) == ("POST", body)
    assert seen.headers["Content-Type"] == "application/json" and seen.headers["X-Signature"] == "s"
    assert post_json(url + "/moved", "webhook_url", LOCAL, body, {}, resolver) == 302  # not followed
    assert [s.path for s in server.seen] == ["/hook", "/moved"]
    assert fetch(url + "/hook", "webhook_url", LOCAL, resolver=resolver, method="POST", body=body) == b""

    connections.clear()
    for target in ("http://10.0.0.5/hook", f"http://meta.example:{server.port}/", f"http://127.0.0.1:{server.port}/"):
        with pytest.raises(InputError) as excinfo:
            post_json(target, "webhook_url", FetchPolicy(), body, {}, resolver)
        assert_error(excinfo, "refused", field="webhook_url")
    assert connections == []
    assert len(server.seen) == 3


# ----------------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA and a certificate for images.example signed by it (openssl command line)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not available")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (d / "leaf.ext").write_text(
        "subjectAltName=DNS:images.example\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    commands = [
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA"]
        + ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
        ["req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=images.example"],
        ["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
        + ["-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext"],
    ]
    for args in commands:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    return d


@pytest.fixture
def tls_server(certificates: Path) -> Iterator[tuple[Server, list[str | None]]]:
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "leaf.pem", certificates / "leaf.key")
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment]
    srv = Server()
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    srv.routes["/img"] = respond(b"over tls")
    for s in serve(srv):
        yield s, names


def test_https_verifies_the_original_name(tls_server: tuple[Server, list], certificates: Path, connections: list):
    srv, names = tls_server
    policy = FetchPolicy(allow=LOCAL.allow, ca_file=str(certificates / "ca.pem"), connect_timeout=2.0)
    assert fetch(f"https://images.example:{srv.port}/img", "image", policy, resolver=resolver) == b"over tls"
    assert names == ["images.example"]  # SNI carries the name although the connection goes to the IP
    assert connections == [("127.0.0.1", srv.port)]
    assert srv.seen[0].headers["Host"] == f"images.example:{srv.port}"
    # Same address, another name: the certificate (for images.example) must not be accepted.
    with pytest.raises(InputError) as excinfo:
        fetch(f"https://other.example:{srv.port}/img", "image", policy, resolver=resolver)
    assert_error(excinfo, "could not connect", "certificate")
    # An IP literal is verified against the IP, which the certificate does not name.
    with pytest.raises(InputError, match="certificate"):
        fetch(f"https://127.0.0.1:{srv.port}/img", "image", policy)
    # Without the test CA, the default trust store refuses the certificate.
    with pytest.raises(InputError, match="certificate"):
        fetch(f"https://images.example:{srv.port}/img", "image", LOCAL, resolver=resolver)
    assert len(srv.seen) == 1


def test_default_resolver_reads_literals_without_dns() -> None:
    assert fetch_module._resolve("127.0.0.1", 80) == ["127.0.0.1"]
