"""60 jobs over one API process and three worker processes: each completes exactly once, none is lost,
and the workers claim them in the order they were submitted."""

from __future__ import annotations

import re
import signal
import time

import httpx
import pytest

from .conftest import WORKERS, claims, completions, logs, submit, wait_terminal

pytestmark = pytest.mark.slow

JOBS = 60
# Claims that happen at nearly the same instant may be logged in either order: three workers commit
# their claim transactions concurrently, and each logs its claim after its commit, on a busy machine.
SAME_INSTANT_S = 0.5


def test_sixty_jobs_complete_exactly_once_in_submission_order(cluster, api):
    workers = cluster.workers()
    # Queue all jobs first (workers paused), so that the three workers then compete for a full queue.
    for worker in workers:
        worker.send(signal.SIGSTOP)
    try:
        ids = [submit(api, seed=n) for n in range(JOBS)]
        status = cluster.command("status")
    finally:
        for worker in workers:
            worker.send(signal.SIGCONT)
    # `framepack status`: the queue depth, and the workers (with their last heartbeat)
    assert status.returncode == 0, status.stderr
    assert re.search(rf"\b{JOBS}\b", status.stdout) and all(w in status.stdout for w in WORKERS), status.stdout

    started = time.monotonic()
    finished = {job: wait_terminal(api, job, timeout=240) for job in ids}
    elapsed = time.monotonic() - started
    failed = {job: data["error"] for job, data in finished.items() if data["status"] != "completed"}
    assert not failed, (failed, logs(cluster))

    done = completions(cluster, ids)
    runs = claims(cluster)
    for job in ids:
        assert len(runs[job]) == 1, (job, runs[job], logs(cluster))  # the engine ran once for it
        assert runs[job][0][1] == 1  # at its first attempt
        assert len(done[job]) == 1, (job, done[job])
    by_worker = {w: sum(1 for job in ids if runs[job][0][0] == w) for w in WORKERS}
    assert all(by_worker.values()), by_worker  # all three took part

    # First in, first out: no job was claimed clearly before one submitted ahead of it.
    latest = None
    for n, job in enumerate(ids):
        when = runs[job][0][2]
        if latest is not None:
            lead = (latest[1] - when).total_seconds()
            assert lead <= SAME_INSTANT_S, f"job #{n} claimed {lead:.2f} s before job #{latest[0]}, submitted earlier"
        if latest is None or when > latest[1]:
            latest = (n, when)

    # Every output downloads (presigned bucket URLs, no key needed), and is an MP4.
    for job in ids[:: JOBS // 6]:
        video = httpx.get(finished[job]["outputs"][0], timeout=30)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp", finished[job]["outputs"][0]
    print(f"{JOBS} jobs in {elapsed:.1f} s on {len(workers)} workers: {by_worker}")
