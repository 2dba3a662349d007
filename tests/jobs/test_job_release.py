"""Giving a job back (graceful stop, storage outage), the cheap control read, the oldest wait, the
worker roster and the secrets shared through the database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from framepack_server.jobs.db import Database, LeaderLock, make_engine
from framepack_server.jobs.keys import shared_secret
from framepack_server.jobs.roster import Roster
from framepack_server.jobs.store import JobStore
from framepack_server.jobs.tables import utcnow


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield database
    database.dispose()


def _claimed(store: JobStore, worker: str = "w1"):
    job = store.submit("k", "m", {"x": 1})
    claimed = store.claim(worker, 30)
    assert claimed is not None and claimed.id == job.id
    return claimed


def test_graceful_release_requeues_without_counting_the_attempt(db):
    store = JobStore(db)
    job = _claimed(store)
    assert store.release(job.id, "w1") == "created"
    again = store.get(job.id)
    assert again.state == "created" and again.attempts == 0 and again.worker_id is None and again.lease_until is None
    assert store.claim("w2", 30).attempts == 1


def test_transient_release_counts_attempts_and_fails_at_the_cap(db):
    store = JobStore(db)
    job = _claimed(store)
    assert store.release(job.id, "w1", max_attempts=2, reason="S3 down") == "created"
    assert store.get(job.id).attempts == 1
    store.claim("w2", 30)
    assert store.release(job.id, "w2", max_attempts=2, reason="cannot upload 'x' in S3 bucket 'b'") == "failed"
    failed = store.get(job.id)
    assert failed.state == "failed" and failed.error == "gave up after 2 attempts: cannot upload 'x' in S3 bucket 'b'"
    assert failed.finished_at is not None


def test_a_job_given_back_with_retry_after_waits_before_it_can_be_claimed(db):
    now = [utcnow()]
    store = JobStore(db, clock=lambda: now[0])
    job = _claimed(store)
    later = store.submit("k", "m", {"x": 2})
    assert store.release(job.id, "w1", max_attempts=3, reason="S3 down", retry_after=10) == "created"
    assert store.claim("w2", 30).id == later.id  # the backing-off job does not hold up the queue
    assert store.claim("w2", 30) is None
    now[0] += timedelta(seconds=11)
    assert store.claim("w2", 30).id == job.id


def test_release_by_a_worker_that_does_not_hold_the_job_changes_nothing(db):
    store = JobStore(db)
    job = _claimed(store)
    assert store.release(job.id, "someone-else") is None
    assert store.get(job.id).state == "processing"


def test_a_cancel_asked_meanwhile_wins_over_release(db):
    store = JobStore(db)
    job = _claimed(store)
    store.cancel(job.id)
    assert store.release(job.id, "w1") == "cancelled"


def test_control_reads_ownership_and_cancel_without_renewing(db):
    store = JobStore(db)
    job = _claimed(store)
    lease = store.get(job.id).lease_until
    control = store.control(job.id, "w1")
    assert control.owned and not control.cancel_requested
    assert not store.control(job.id, "w2").owned
    store.cancel(job.id)
    assert store.control(job.id, "w1").cancel_requested
    assert store.get(job.id).lease_until == lease
    assert not store.control("missing", "w1").owned


def test_oldest_waiting(db):
    store = JobStore(db)
    assert store.oldest_waiting() is None
    first = store.submit("k", "m", {})
    store.submit("k", "m", {})
    assert store.oldest_waiting() == first.created_at
    store.claim("w", 30)
    assert store.oldest_waiting() > first.created_at


def test_roster_register_report_list_and_forget(db):
    roster = Roster(db)
    roster.register("w1", "cuda:0")
    roster.report("w1", "busy", "job1", gpu_memory=(5 * 2**30, 6 * 2**30))
    roster.report("w1", "idle", None, finished_job=True)
    roster.report("unknown", "idle", None)  # never registered: ignored
    (info,) = roster.list()
    assert (info.id, info.device, info.state, info.job_id, info.jobs_done) == ("w1", "cuda:0", "idle", None, 1)
    assert info.gpu_memory_bytes is None or info.gpu_memory_bytes == 5 * 2**30
    assert utcnow() - info.last_seen < timedelta(seconds=30)
    assert roster.forget_stopped(older_than=timedelta(days=1)) == 0
    assert roster.forget_stopped(older_than=timedelta(seconds=-1)) == 1 and roster.list() == []


def test_shared_secret_is_seeded_once_and_read_by_every_replica(tmp_path, db):
    seed = tmp_path / "box-a" / "secret.key"
    first = shared_secret(db, "url-signing", seed)
    assert seed.read_bytes() == first  # an existing one-box secret carries over
    other = Database(f"sqlite:///{tmp_path / 'jobs.db'}")  # another replica on the same database
    assert shared_secret(other, "url-signing", tmp_path / "box-b" / "secret.key") == first
    assert not (tmp_path / "box-b" / "secret.key").exists()
    assert shared_secret(db, "webhook-signing", tmp_path / "box-a" / "webhook.key") != first
    other.dispose()


def test_postgresql_urls_use_psycopg_3():
    engine = make_engine("postgresql://user:pw@127.0.0.1:1/db")
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()


def test_every_process_holds_the_leader_lock_on_sqlite(db):
    assert LeaderLock(db, 1).held() and LeaderLock(db, 1).held()
