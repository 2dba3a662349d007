"""Throwaway services on 127.0.0.1 for the cluster tests and benchmarks (not used by the server).

* :class:`Postgres`: a PostgreSQL cluster of Debian's server binaries in a temporary folder, on a
  free port (initdb, ``pg_ctl start`` / ``stop -m fast``, createdb); ``url`` is its address.
* :class:`MotoS3`: moto's S3 server as a subprocess, reached through a small TCP gate on the public
  port, so that :meth:`MotoS3.block` makes the endpoint refuse connections while moto keeps its
  buckets (an outage that ends), and :meth:`MotoS3.stop` ends it all.
* :class:`Cluster`: ``framepack serve`` and ``framepack worker`` processes on one database and
  storage, each with its own data folder (a machine of its own) and log file; log lines are read
  back with their timestamps.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "AWS_ENV", "ApiProcess", "Cluster", "FramepackProcess", "LocalStackError", "LogLine", "MotoS3", "Postgres",
    "find_postgres_bin", "free_port", "wait_for",
]  # fmt: skip

INSTALL_POSTGRES = "apt-get install postgresql"
# Placeholder credentials for moto (it accepts any); real deployments take theirs from the environment.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+): (.*)$")


class LocalStackError(RuntimeError):
    """A local service could not be found, started or stopped."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Call ``check`` until it is true; LocalStackError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise LocalStackError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


# ---- PostgreSQL ---------------------------------------------------------------------------------


def find_postgres_bin() -> Path:
    """The folder with PostgreSQL's initdb and pg_ctl (newest Debian version first, then PATH)."""

    def version(initdb: str) -> tuple[int, ...]:  # /usr/lib/postgresql/<version>/bin/initdb
        return tuple(int(part) for part in re.findall(r"\d+", Path(initdb).parts[4]))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    for initdb in [*found, *([on_path] if on_path else [])]:
        folder = Path(initdb).parent
        if (folder / "pg_ctl").exists():
            return folder
    raise LocalStackError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH; "
        f"install them with `{INSTALL_POSTGRES}` (Debian/Ubuntu; the system service need not run)"
    )


class Postgres:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only (trust auth, no fsync).

    As root the tools run as the ``postgres`` user (PostgreSQL refuses root), and the folder is theirs.
    """

    def __init__(self, *, port: int | None = None, database: str = "framepack", bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_postgres_bin()
        self.port = port or free_port()
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="framepack-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            try:
                shutil.chown(self.root, self._user, self._user)
            except LookupError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise LocalStackError(
                    "PostgreSQL refuses to run as root, and there is no `postgres` user to run it as "
                    f"(`{INSTALL_POSTGRES}` creates one)"
                ) from None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            log = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise LocalStackError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()}\n{log}")
        return done

    @property
    def running(self) -> bool:
        return self.data.exists() and self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def start(self) -> Postgres:
        first = not (self.data / "PG_VERSION").exists()
        if first:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log_path), "-o", options)
        if first:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database)
        return self

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: connections are cut and the port closes."""
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data))

    def restart(self) -> Postgres:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop it and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Postgres:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.close()


# ---- S3 (moto) ----------------------------------------------------------------------------------


class _Gate:
    """A TCP forwarder from ``port`` to ``target``; closed, the port refuses connections and open ones are cut."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name=f"gate-{self.port}").start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):  # stops listening now, even while accept() waits on it
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
                conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._listener is not listener:  # closed meanwhile
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            with self._lock:
                self._connections.discard(source)
            source.close()


class MotoS3:
    """moto's S3 server in a subprocess; clients use ``endpoint_url`` (a gate in this process)."""

    def __init__(self, *, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self._backend_port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._gate = _Gate(self.port, self._backend_port)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> MotoS3:
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self._backend_port)]
        env = {**os.environ, **AWS_ENV, "MOTO_PORT": str(self._backend_port)}
        self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        backend = f"http://127.0.0.1:{self._backend_port}/moto-api/"
        wait_for(lambda: self._alive() and _answers(backend), timeout, "moto's S3 server")
        self._gate.open()
        return self

    def _alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise LocalStackError(f"moto's S3 server is not running (log: {self.log_path})")
        return True

    def block(self) -> None:
        """The endpoint refuses connections and open ones are cut; moto keeps its buckets and objects."""
        self._gate.close()

    def unblock(self) -> None:
        self._gate.open()

    def stop(self) -> None:
        """End the server (its buckets are gone) and close the endpoint."""
        self._gate.close()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name``; returns ``s3://name``."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def __enter__(self) -> MotoS3:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# ---- framepack processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """One line of a process's log in the package's logging format."""

    at: datetime
    level: str
    logger: str
    message: str


@dataclass
class FramepackProcess:
    """A ``framepack`` command running in its own process group, its output in ``log_path``."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[FramepackProcess], bool]
    process: subprocess.Popen[bytes] | None = None
    _offset: int = 0

    def launch(self) -> FramepackProcess:
        """Start the process without waiting for it; a restart appends to the same log."""
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "framepack_server.cli", *self.args], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def wait_ready(self, timeout: float = 120.0) -> FramepackProcess:
        wait_for(lambda: self._check_alive() and self.ready(self), timeout, f"{self.name} to start ({self.log_path})")
        return self

    def _check_alive(self) -> bool:
        if not self.running:
            raise LocalStackError(f"{self.name} exited ({self.returncode}): {self.log_text()[-3000:]}")
        return True

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_text(self, *, current: bool = False) -> str:
        """The log; with ``current``, only what the latest start wrote."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._offset if current else 0)
            return log.read().decode(errors="replace")

    def lines(self, pattern: str = "", *, current: bool = False) -> list[LogLine]:
        """The log lines (package logging format) whose message matches ``pattern`` (a regex)."""
        found = []
        for raw in self.log_text(current=current).splitlines():
            match = _LOG_LINE.match(raw)
            if match and re.search(pattern, match.group(4)):
                at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                found.append(LogLine(at, match.group(2), match.group(3), match.group(4)))
        return found

    def send(self, sig: int) -> None:
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean-up of any kind."""
        self.send(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def terminate(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then wait up to ``timeout`` s (SIGKILL after that); the exit code."""
        self.send(signal.SIGTERM)
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode


@dataclass
class ApiProcess(FramepackProcess):
    port: int = 0
    key: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


def _api_ready(proc: FramepackProcess) -> bool:
    assert isinstance(proc, ApiProcess)
    text = proc.log_text(current=True)
    if f"framepack-server on {proc.url}" not in text or not _answers(proc.url + "/health"):
        return False
    match = re.search(r"API key \(shown once.*\): (\S+)", text)  # printed before it listens: read it now
    if match and proc.key is None:
        proc.key = match.group(1)
    return True


def _worker_ready(proc: FramepackProcess) -> bool:
    return bool(proc.lines(r"\bstarted$", current=True))


@dataclass
class Cluster:
    """``framepack`` processes on one database and one storage, each in its own data folder under ``root``.

    ``storage`` (``s3://bucket/prefix`` or a folder) and ``storage_endpoint`` go to every process;
    without ``storage`` all processes share one data folder (and so its files). ``env`` is added to
    the environment of every process (``FRAMEPACK_*`` settings, AWS credentials, thread counts).
    """

    root: Path
    database: str
    storage: str | None = None
    storage_endpoint: str | None = None
    cache_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    processes: list[FramepackProcess] = field(default_factory=list)

    def _options(self, name: str) -> list[str]:
        """Where a process named ``name`` keeps its data, and the shared database and storage."""
        data = self.root / (name if self.storage else "data")
        options = ["--data-dir", str(data), "--database", self.database]
        if self.storage:
            options += ["--storage", self.storage]
        if self.storage_endpoint:
            options += ["--storage-endpoint-url", self.storage_endpoint]
        if self.cache_dir:
            options += ["--cache-dir", str(self.cache_dir)]
        return options

    def _environment(self) -> dict[str, str]:
        return {"HF_HUB_OFFLINE": "1", "FRAMEPACK_SAFETY_BACKEND": "none", **os.environ, **AWS_ENV, **self.env}

    def _log(self, name: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"{name}.log"

    def prepare(self, models: tuple[str, ...] = ("tiny",)) -> None:
        """Build the tiny models once, before processes that would otherwise all build them at once."""
        for model in models:
            args = [sys.executable, "-m", "framepack_server.cli", "download", model]
            args += ["--cache-dir", str(self.cache_dir)] if self.cache_dir else []
            done = subprocess.run(args, env=self._environment(), capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise LocalStackError(f"framepack download {model} failed: {done.stderr[-2000:]}")

    def command(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a one-shot ``framepack`` command (``db upgrade``, ``status`` ...) on the cluster's database."""
        argv = [sys.executable, "-m", "framepack_server.cli", *args, *self._options("cli")]
        return subprocess.run(argv, env=self._environment(), capture_output=True, text=True, timeout=timeout)

    def api(self, *args: str, name: str = "api", port: int | None = None, wait: float | None = 120.0) -> ApiProcess:
        """Start ``framepack serve --no-worker`` (plus ``args``); wait up to ``wait`` s until it answers
        (``None``: don't wait; call ``wait_ready`` later)."""
        port = port or free_port()
        argv = ["serve", "--no-worker", "--model-family", "tiny", "--port", str(port), *self._options(name), *args]
        proc = ApiProcess(name, argv, self._environment(), self._log(name), _api_ready, port=port)
        return self._start(proc, wait)  # type: ignore[return-value]

    def worker(self, name: str, *args: str, wait: float | None = 120.0) -> FramepackProcess:
        """Start ``framepack worker --worker-id name`` (plus ``args``); wait up to ``wait`` s until its loop runs."""
        argv = ["worker", "--worker-id", name, "--model-family", "tiny", *self._options(name), *args]
        return self._start(FramepackProcess(name, argv, self._environment(), self._log(name), _worker_ready), wait)

    def _start(self, proc: FramepackProcess, wait: float | None) -> FramepackProcess:
        self.processes.append(proc)
        proc.launch()
        return proc if wait is None else proc.wait_ready(wait)

    def workers(self) -> list[FramepackProcess]:
        return [p for p in self.processes if p.args[0] == "worker"]

    def lines(self, pattern: str) -> Iterator[tuple[FramepackProcess, LogLine]]:
        """Matching log lines of every process this cluster started (restarts included)."""
        for proc in self.processes:
            for line in proc.lines(pattern):
                yield proc, line

    def close(self, timeout: float = 30.0) -> None:
        """SIGTERM every process (SIGKILL after ``timeout``)."""
        for proc in self.processes:
            proc.send(signal.SIGTERM)
        for proc in self.processes:
            proc.terminate(timeout)
