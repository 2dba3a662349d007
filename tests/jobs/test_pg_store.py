"""The job store on a real PostgreSQL (started here, on 127.0.0.1): migrations, exact-once FIFO
claims from many threads (FOR UPDATE SKIP LOCKED), release, the webhook leader lock, shared secrets,
and recovery after the server restarts."""

from __future__ import annotations

import threading

import pytest

from framepack_server.jobs.db import Database, LeaderLock
from framepack_server.jobs.keys import shared_secret
from framepack_server.jobs.store import JobStore
from framepack_server.localstack import Postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres():
    with Postgres() as pg:
        yield pg


@pytest.fixture
def db(postgres):
    database = Database(postgres.url)
    with database.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE jobs, workers, server_secrets")
    yield database
    database.dispose()


def test_many_threads_claim_every_job_once_in_submission_order(db):
    store = JobStore(db)
    submitted = [store.submit("k", "m", {"n": i}).id for i in range(120)]
    claimed: dict[str, list[tuple[int, str]]] = {}

    def claimer(name: str) -> None:
        own = JobStore(Database(db.engine.url, migrate=False))
        mine = claimed.setdefault(name, [])
        while (job := own.claim(name, 30)) is not None:
            mine.append((job.seq, job.id))
        own.db.dispose()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [job_id for mine in claimed.values() for _seq, job_id in mine]
    assert sorted(ids) == sorted(submitted) and len(set(ids)) == len(ids) == 120
    # Oldest first: every claimer got its jobs in submission order (a row only ever leaves the queue,
    # so a claimer that took job n next finds the oldest waiting one, which comes after n). The order
    # across claimers is not observable from here: threads append after their commit, in any order.
    for mine in claimed.values():
        seqs = [seq for seq, _id in mine]
        assert seqs == sorted(seqs)
    assert sum(1 for mine in claimed.values() if mine) >= 2  # they really competed


def test_release_and_counts_on_postgresql(db):
    store = JobStore(db)
    job = store.submit("k", "m", {})
    store.claim("w", 30)
    assert store.release(job.id, "w") == "created" and store.get(job.id).attempts == 0
    assert store.counts()["created"] == 1 and store.oldest_waiting() == job.created_at


def test_only_one_leader_until_its_connection_goes(db, postgres):
    other = Database(postgres.url, migrate=False)
    a, b = LeaderLock(db, 42), LeaderLock(other, 42)
    assert a.held() and not b.held()
    assert a.held()  # still ours
    a.release()
    assert b.held() and not a.held()
    b.release()
    other.dispose()


def test_replicas_agree_on_the_shared_secret(db, postgres, tmp_path):
    results: list[bytes] = []

    def replica(i: int) -> None:
        own = Database(postgres.url, migrate=False)
        results.append(shared_secret(own, "url-signing", tmp_path / f"box{i}" / "secret.key"))
        own.dispose()

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1


def test_the_store_recovers_after_the_server_restarts(db, postgres):
    store = JobStore(db)
    before = store.submit("k", "m", {})
    lock = LeaderLock(db, 7)
    assert lock.held()
    postgres.restart()
    assert not lock.held()  # its session died with the server: the lock is free for anyone
    assert lock.held()  # and can be taken again
    after = store.submit("k", "m", {})  # the pool's stale connections are replaced (pre-ping)
    assert store.get(before.id) is not None and store.get(after.id).seq > before.seq
    lock.release()
