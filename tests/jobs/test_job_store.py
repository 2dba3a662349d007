"""The job queue on SQLite: FIFO claims, leases and heartbeats, requeue, cancel, listing, durability."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from framepack_server.jobs.db import Database
from framepack_server.jobs.store import Control, JobState, JobStore, WebhookState

LEASE = 30.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'jobs.sqlite'}"


@pytest.fixture
def db(url):
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db, clock) -> JobStore:
    return JobStore(db, clock=clock)


def test_submit_stores_a_created_job(store, clock):
    job = store.submit(
        "key1", "wavespeed-ai/framepack", {"prompt": "a cat"}, options={"sync": False}, webhook="https://h"
    )
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    assert job.state is JobState.CREATED and job.key_id == "key1" and job.model == "wavespeed-ai/framepack"
    assert job.params == {"prompt": "a cat"} and job.options == {"sync": False} and job.webhook == "https://h"
    assert job.created_at == clock.now and job.created_at.tzinfo is not None
    assert (job.attempts, job.started_at, job.finished_at, job.lease_until, job.worker_id) == (
        0,
        None,
        None,
        None,
        None,
    )
    assert job.outputs == [] and job.has_nsfw_contents == [] and job.error == "" and job.progress is None
    assert job.webhook_state is WebhookState.PENDING
    assert store.get(job.id) == job
    plain = store.submit(None, "m", {})
    assert plain.options == {} and plain.webhook_state is None and plain.seq > job.seq


def test_claims_are_fifo(store, clock):
    ids = [store.submit("k", "m", {"i": i}).id for i in range(5)]
    claimed = []
    for _ in ids:
        job = store.claim("w1", LEASE)
        assert job.state is JobState.PROCESSING and job.worker_id == "w1" and job.attempts == 1
        assert job.started_at == clock.now and job.lease_until == clock.now + timedelta(seconds=LEASE)
        claimed.append(job.id)
        clock.advance(1)
    assert claimed == ids
    assert store.claim("w1", LEASE) is None


def test_heartbeat_renews_the_lease_and_writes_progress(store, clock):
    job_id = store.submit("k", "m", {}).id
    store.claim("w1", LEASE)
    clock.advance(20)
    control = store.heartbeat(job_id, "w1", LEASE, {"section": 1, "sections": 3})
    assert control == Control(owned=True, cancel_requested=False)
    job = store.get(job_id)
    assert job.lease_until == clock.now + timedelta(seconds=LEASE) and job.progress == {"section": 1, "sections": 3}
    clock.advance(20)  # 40 s after the claim, but 20 s after the heartbeat: not expired
    assert store.requeue_expired(max_attempts=3) == 0
    assert store.heartbeat(job_id, "someone-else", LEASE) == Control(owned=False, cancel_requested=False)
    assert store.heartbeat("nope", "w1", LEASE).owned is False


def test_an_expired_lease_requeues_and_the_old_worker_loses_the_job(store, clock):
    job_id = store.submit("k", "m", {}).id
    first = store.claim("w1", LEASE)
    store.heartbeat(job_id, "w1", LEASE, {"section": 2})
    clock.advance(LEASE + 1)
    assert store.requeue_expired(max_attempts=3) == 1
    job = store.get(job_id)
    assert job.state is JobState.CREATED and job.worker_id is None and job.lease_until is None
    assert job.progress == {"section": 2} and job.started_at == first.started_at and job.attempts == 1

    assert store.heartbeat(job_id, "w1", LEASE).owned is False
    assert store.complete(job_id, "w1", ["out.mp4"], [False], 10) is False
    assert store.fail(job_id, "w1", "boom") is False
    assert store.mark_cancelled(job_id, "w1") is False

    clock.advance(5)
    again = store.claim("w2", LEASE)
    assert again.id == job_id and again.attempts == 2 and again.started_at == first.started_at
    assert store.heartbeat(job_id, "w1", LEASE).owned is False
    assert store.complete(job_id, "w2", ["out.mp4"], [False], 10) is True


def test_requeue_gives_up_after_max_attempts(store, clock):
    job_id = store.submit("k", "m", {}).id
    for attempt in (1, 2):
        assert store.claim("w", LEASE).attempts == attempt
        clock.advance(LEASE + 1)
        assert store.requeue_expired(max_attempts=2) == 1
    job = store.get(job_id)
    assert job.state is JobState.FAILED and job.finished_at == clock.now
    assert job.error == "gave up after 2 attempts (the worker holding it stopped responding)"
    assert store.claim("w", LEASE) is None
    assert store.requeue_expired(max_attempts=2) == 0


def test_requeue_takes_an_explicit_now_in_any_timezone(db):
    store = JobStore(db)
    job_id = store.submit("k", "m", {}).id
    store.claim("w", 60)
    assert store.requeue_expired(3, now=datetime.now(UTC) + timedelta(seconds=30)) == 0
    later = (datetime.now(UTC) + timedelta(seconds=61)).astimezone(timezone(timedelta(hours=-5)))
    assert store.requeue_expired(3, now=later) == 1
    assert store.get(job_id).state is JobState.CREATED


def test_complete_fail_and_mark_cancelled_apply_once(store, clock):
    a, b, c = (store.submit("k", "m", {}).id for _ in range(3))
    for _ in range(3):
        store.claim("w", LEASE)
    clock.advance(3)
    assert store.complete(a, "w", ["jobs/a/out.mp4"], [False], 1234, seed=42) is True
    done = store.get(a)
    assert done.state is JobState.COMPLETED and done.outputs == ["jobs/a/out.mp4"] and done.has_nsfw_contents == [False]
    assert (done.inference_ms, done.result_seed, done.lease_until, done.finished_at) == (1234, 42, None, clock.now)
    assert store.complete(a, "w", [], [], 1) is False and store.fail(a, "w", "late") is False

    assert store.fail(b, "other", "not mine") is False
    assert store.fail(b, "w", "out of memory") is True
    failed = store.get(b)
    assert failed.state is JobState.FAILED and failed.error == "out of memory" and failed.lease_until is None

    assert store.mark_cancelled(c, "w") is True
    assert store.get(c).state is JobState.CANCELLED
    assert store.requeue_expired(1, now=clock.now + timedelta(days=1)) == 0


def test_cancel_created_job_never_starts(store, clock):
    job_id = store.submit("k", "m", {}).id
    assert store.cancel(job_id, "other-key") is None
    assert store.cancel("missing", "k") is None
    job = store.cancel(job_id, "k")
    assert job.state is JobState.CANCELLED and job.finished_at == clock.now and not job.cancel_requested
    assert store.claim("w", LEASE) is None


def test_cancel_processing_job_asks_the_worker_to_stop(store):
    job_id = store.submit("k", "m", {}).id
    store.claim("w", LEASE)
    job = store.cancel(job_id, None)
    assert job.state is JobState.PROCESSING and job.cancel_requested
    assert store.heartbeat(job_id, "w", LEASE) == Control(owned=True, cancel_requested=True)
    assert store.mark_cancelled(job_id, "w") is True
    job = store.get(job_id)
    assert job.state is JobState.CANCELLED and job.finished_at is not None
    assert store.cancel(job_id, "k") == job  # terminal: unchanged


def test_cancel_leaves_finished_jobs_alone(store):
    job_id = store.submit("k", "m", {}).id
    store.claim("w", LEASE)
    store.complete(job_id, "w", ["o"], [False], 1)
    before = store.get(job_id)
    assert store.cancel(job_id, "k") == before


def test_cancel_requested_job_whose_lease_expires_is_cancelled(store, clock):
    job_id = store.submit("k", "m", {}).id
    store.claim("w", LEASE)
    store.cancel(job_id, "k")
    clock.advance(LEASE + 1)
    assert store.requeue_expired(max_attempts=5) == 1
    job = store.get(job_id)
    assert job.state is JobState.CANCELLED and job.worker_id is None and job.finished_at == clock.now


def test_list_is_newest_first_paginated_and_isolated_by_key(store, clock):
    a_ids = []
    for i in range(25):
        a_ids.append(store.submit("a", "m", {"i": i}).id)
        if i % 3 == 0:
            store.submit("b", "m", {"i": i})
    newest_first = a_ids[::-1]
    page1, total = store.list("a", page=1, page_size=10)
    page3, _ = store.list("a", page=3, page_size=10)
    assert total == 25 and [j.id for j in page1] == newest_first[:10] and [j.id for j in page3] == newest_first[20:]
    assert store.list("a", page=4, page_size=10) == ([], 25)
    b_jobs, b_total = store.list("b")
    assert b_total == 9 and all(j.key_id == "b" for j in b_jobs)
    assert store.list("nobody") == ([], 0)
    assert store.list(None, page_size=100)[1] == 34
    assert store.get(a_ids[0], key_id="b") is None and store.get(a_ids[0], key_id="a").id == a_ids[0]
    with pytest.raises(ValueError):
        store.list("a", page=0)


def test_counts_and_webhook_state(store):
    ids = [store.submit("k", "m", {}, webhook="https://hook").id for _ in range(4)]
    store.claim("w", LEASE)
    store.claim("w", LEASE)
    store.complete(ids[0], "w", ["o"], [False], 1)
    store.cancel(ids[3], "k")
    assert store.counts() == {"created": 1, "processing": 1, "completed": 1, "failed": 0, "cancelled": 1}
    assert [j.id for j in store.pending_webhooks()] == [ids[0], ids[3]]
    assert store.set_webhook_state(ids[0], "delivered") is True
    assert store.set_webhook_state(ids[3], WebhookState.FAILED) is True
    assert store.get(ids[0]).webhook_state is WebhookState.DELIVERED
    assert store.pending_webhooks() == []
    assert store.set_webhook_state("missing", "delivered") is False
    with pytest.raises(ValueError):
        store.set_webhook_state(ids[1], "bogus")


def test_datetimes_are_utc_whatever_the_clock_zone(db):
    zone = timezone(timedelta(hours=2))
    local = datetime(2025, 6, 1, 14, 0, tzinfo=zone)
    job = JobStore(db, clock=lambda: local).submit("k", "m", {})
    read = JobStore(db).get(job.id)
    assert read.created_at == local and read.created_at.utcoffset() == timedelta(0)
    with db.engine.connect() as conn:  # stored as UTC text, so text order is time order on SQLite
        assert conn.execute(text("SELECT created_at FROM jobs")).scalar_one().startswith("2025-06-01 12:00:00")


def test_a_job_survives_reopening_the_database(url):
    first = Database(url)
    job = JobStore(first).submit("k", "m", {"prompt": "durable"}, options={"sync": True})
    first.dispose()
    second = Database(url)
    try:
        assert JobStore(second).get(job.id) == job
    finally:
        second.dispose()


def test_sqlite_settings(db):
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_in_memory_database_works():
    db = Database("sqlite://")
    store = JobStore(db)
    job_id = store.submit("k", "m", {}).id
    assert store.claim("w", 5).id == job_id
    db.dispose()


def test_a_failed_transaction_rolls_back(db):
    store = JobStore(db)
    job_id = store.submit("k", "m", {}).id
    with pytest.raises(RuntimeError), db.session() as session:
        session.execute(text("UPDATE jobs SET state = 'failed'"))
        raise RuntimeError("boom")
    assert store.get(job_id).state is JobState.CREATED
