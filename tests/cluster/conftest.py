"""Scale-out with real components on 127.0.0.1: a PostgreSQL cluster (Debian's binaries), moto's S3
server, one `framepack serve --no-worker` and three `framepack worker` processes, each process in a
data folder of its own (as if on a machine of its own), sharing only the database and the bucket.

The shared cluster (short lease, two attempts) serves the FIFO, cancel, kill and S3-outage tests;
the PostgreSQL-outage test builds its own (its database goes away, and it needs a longer lease).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from framepack_server.localstack import Cluster, LogLine, MotoS3, Postgres
from framepack_server.media.video import read_frames

from ..api.conftest import SUBMIT, data_uri, wait_terminal

__all__ = ["SUBMIT", "data_uri", "wait_terminal"]  # the HTTP tests' helpers, for the tests here
LEASE_SECONDS = 6
WORKERS = ("w1", "w2", "w3")
WORKER_ARGS = ("--lease-seconds", str(LEASE_SECONDS), "--max-attempts", "2")  # the shared cluster's workers
# A one-section tiny job: 80x48 pixels, 30 frames, 4 steps.
SMALL = {"prompt": "waves under a lighthouse", "resolution": "480p", "num_frames": 30, "num_inference_steps": 4,
         "enable_safety_checker": False}  # fmt: skip
# Every process: one torch thread (three workers share two cores), no per-key queue cap for the 60-job test.
ENV = {"OMP_NUM_THREADS": "1", "FRAMEPACK_MAX_QUEUED_PER_KEY": "10000"}
_CLAIM = re.compile(r"^(\S+): job (\w+) started \(attempt (\d+)\)$")
_DONE = re.compile(r"^(\S+): job (\w+) completed in ")


def start_cluster(cluster: Cluster, worker_args: tuple[str, ...] = (), workers: tuple[str, ...] = WORKERS) -> Cluster:
    """Migrate the database, then start the API and the workers together and wait for all of them."""
    upgraded = cluster.command("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    started = [cluster.api("--no-auth", wait=None), *(cluster.worker(w, *worker_args, wait=None) for w in workers)]
    for proc in started:
        proc.wait_ready(180)
    return cluster


@pytest.fixture(scope="session")
def tiny_cache(settings) -> Path:
    """The session's model cache with the tiny model built once, before several processes load it."""
    Cluster(settings.cache_dir, "", cache_dir=settings.cache_dir).prepare()
    return settings.cache_dir


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with Postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Iterator[MotoS3]:
    with MotoS3(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as s3:
        yield s3


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, tiny_cache, postgres, moto) -> Iterator[Cluster]:
    bucket = moto.create_bucket("framepack-cluster")
    root = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(root, postgres.url, f"{bucket}/shared", moto.endpoint_url, tiny_cache, dict(ENV))
    try:
        yield start_cluster(cluster, WORKER_ARGS)
    finally:
        cluster.close()


@pytest.fixture
def api(cluster) -> Iterator[httpx.Client]:
    with cluster.processes[0].client() as client:  # the API process, started first
        yield client


# ---- helpers ------------------------------------------------------------------------------------


def submit(client: httpx.Client, seed: int = 0, **fields: object) -> str:
    body = {"image": data_uri(seed % 7), **SMALL, "seed": seed, **fields}
    response = client.post(SUBMIT, json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]["id"]


def result(client: httpx.Client, job_id: str) -> dict:
    response = client.get(f"/api/v3/predictions/{job_id}/result")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_progress(client: httpx.Client, job_id: str, done, timeout: float = 120.0) -> dict:
    """Poll until ``done(data)`` is true for the job's result (the job must not end meanwhile)."""
    deadline = time.monotonic() + timeout
    while not done(data := result(client, job_id)):
        assert data["status"] in ("created", "processing"), data
        assert time.monotonic() < deadline, f"job {job_id}: condition not reached after {timeout} s: {data}"
        time.sleep(0.05)
    return data


def claims(cluster: Cluster) -> dict[str, list[tuple[str, int, datetime]]]:
    """Each engine run the workers logged, by job: (worker, attempt, when), in time order."""
    runs: dict[str, list[tuple[str, int, datetime]]] = defaultdict(list)
    for _proc, line in cluster.lines(_CLAIM.pattern):
        worker, job, attempt = _CLAIM.match(line.message).groups()  # type: ignore[union-attr]
        runs[job].append((worker, int(attempt), line.at))
    for found in runs.values():
        found.sort(key=lambda run: run[2])
    return runs


def completions(cluster: Cluster, expected: Iterable[str] = (), timeout: float = 15.0) -> dict[str, list[LogLine]]:
    """Each "completed" line the workers logged, by job. A worker logs it just after the database
    says completed, so a client can see the state first: wait (up to ``timeout``) for ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        done: dict[str, list[LogLine]] = defaultdict(list)
        for _proc, line in cluster.lines(_DONE.pattern):
            done[_DONE.match(line.message).group(2)].append(line)  # type: ignore[union-attr]
        if all(done.get(job) for job in expected) or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


def holder(cluster: Cluster, job_id: str):
    """The worker process that logged the job's latest claim."""
    worker = claims(cluster)[job_id][-1][0]
    return next(p for p in reversed(cluster.processes) if p.name == worker)


def video_frames(url: str, path: Path) -> np.ndarray:
    """Download an output (the presigned URL, no key) and decode every frame."""
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    path.write_bytes(response.content)
    return read_frames(path)


def logs(cluster: Cluster) -> str:
    """Where to look when a test fails."""
    return "logs: " + ", ".join(str(p.log_path) for p in cluster.processes)
