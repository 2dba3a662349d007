"""Concurrent claims on one SQLite file: every job handed out exactly once, in FIFO order."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from framepack_server.jobs.db import Database, upgrade_database
from framepack_server.jobs.store import JobStore

CHILD = """
import json, sys
from framepack_server.jobs.db import Database
from framepack_server.jobs.store import JobStore
db = Database(sys.argv[1])
store = JobStore(db)
claimed = []
while (job := store.claim(sys.argv[2], 60)) is not None:
    assert store.complete(job.id, sys.argv[2], [f"{job.id}.mp4"], [False], 1)
    claimed.append(job.seq)
db.dispose()
print(json.dumps(claimed))
"""


def test_threads_with_their_own_engines_claim_each_job_once_in_fifo_order(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    setup = Database(url)
    seqs = [JobStore(setup).submit("k", "m", {"i": i}).seq for i in range(200)]
    setup.dispose()

    workers, start = 8, threading.Barrier(8)
    claims: dict[int, list] = {n: [] for n in range(workers)}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        db = Database(url, migrate=False)
        store = JobStore(db)
        try:
            start.wait()
            while (job := store.claim(f"w{n}", 60)) is not None:
                claims[n].append(job)
                time.sleep(0.001)  # a worker works between claims (SQLite's lock is not fair otherwise)
        except BaseException as exc:  # reported below: no "database is locked" may leak
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    every = [job for jobs in claims.values() for job in jobs]
    assert sorted(job.seq for job in every) == seqs  # each job exactly once
    assert sum(1 for jobs in claims.values() if jobs) > 1  # the work was really shared
    for n, jobs in claims.items():  # each worker's claims in FIFO order ...
        assert [job.seq for job in jobs] == sorted(job.seq for job in jobs)
        assert all(job.worker_id == f"w{n}" and job.attempts == 1 for job in jobs)
    # ... and all of them: claim times (taken under the writer lock) follow the queue order.
    by_time = sorted(every, key=lambda job: (job.started_at, job.seq))
    assert [job.seq for job in by_time] == seqs


def test_processes_claim_each_job_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade_database(url)
    db = Database(url, migrate=False)
    store = JobStore(db)
    seqs = [store.submit("k", "m", {"i": i}).seq for i in range(90)]

    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, url, f"p{n}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for n in range(3)
    ]
    results = [child.communicate(timeout=60) for child in children]
    for child, (_, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err.decode()
    claimed = [json.loads(out) for out, _ in results]
    assert sorted(seq for seqs_ in claimed for seq in seqs_) == seqs
    assert all(part == sorted(part) for part in claimed)
    assert store.counts()["completed"] == 90
    db.dispose()
