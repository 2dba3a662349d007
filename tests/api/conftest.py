"""A real `framepack serve` process on a loopback port, with the tiny models."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One server process; `restart` keeps its data folder (jobs, files, keys)."""

    data_dir: Path
    cache_dir: Path
    port: int
    extra_env: dict
    key: str | None = None
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str, timeout: float = 120.0) -> Server:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "FRAMEPACK_CACHE_DIR": str(self.cache_dir),
            "FRAMEPACK_URL_ALLOW": "127.0.0.0/8",  # the tests' image servers and webhook receivers
            **self.extra_env,
        }
        self.log_path = self.data_dir.parent / f"server-{self.port}-{time.monotonic_ns()}.log"
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "framepack_server.cli", "serve", "--model-family", "tiny",
             "--data-dir", str(self.data_dir), "--port", str(self.port), *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                healthy = httpx.get(self.url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                healthy = False
            text = self.log_path.read_text()
            if healthy and f"framepack-server on http://127.0.0.1:{self.port}" in text:  # ours, not a stray one
                # The key is printed before the server listens: read it only once it answers.
                match = re.search(r"API key \(shown once.*\): (\S+)", text)
                if match and self.key is None:
                    self.key = match.group(1)
                return self
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, *args: str) -> Server:
        self.stop()
        return self.start(*args)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.key}"}, timeout=60)


@pytest.fixture
def make_server(tmp_path, settings):
    """Factory: ``make_server(env={...}, args=[...])`` starts a server in its own data folder."""
    servers: list[Server] = []

    def make(*args: str, env: dict | None = None) -> Server:
        server = Server(tmp_path / f"data{len(servers)}", settings.cache_dir, free_port(), env or {})
        servers.append(server)
        return server.start(*args)

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, settings):
    """A shared server for the tests that don't need their own."""
    data = tmp_path_factory.mktemp("server")
    srv = Server(data / "data", settings.cache_dir, free_port(), {}).start()
    yield srv
    srv.stop()


# ---- helpers shared by the HTTP tests -------------------------------------------------------------

MODEL = "wavespeed-ai/framepack"
SUBMIT = f"/api/v3/{MODEL}"
TERMINAL = ("completed", "failed", "cancelled")


def smooth_png(seed: int = 0, width: int = 120, height: int = 80) -> bytes:
    """A smooth test picture (the session's `smooth_image`) as PNG bytes."""
    import io

    from ..conftest import smooth_image

    buffer = io.BytesIO()
    smooth_image(width, height, seed).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(seed: int = 0) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(smooth_png(seed)).decode()


def wait_terminal(client: httpx.Client, job_id: str, timeout: float = 300.0, interval: float = 0.2) -> dict:
    """Poll a prediction until it is completed, failed or cancelled; its `data`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/v3/predictions/{job_id}/result")
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        if data["status"] in TERMINAL:
            return data
        time.sleep(interval)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def with_query(url: str, **changes: str | None) -> str:
    """``url`` with some query parameters changed (None drops one)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return parts._replace(query=urlencode(query)).geturl()
