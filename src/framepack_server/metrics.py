"""Prometheus metrics (prometheus-client).

Two kinds. What a worker process measures as it works (queue wait, job, section and step durations,
jobs finished by outcome) lives in this process's registry: `framepack serve` shows its embedded
worker's at ``/metrics``, and `framepack worker --metrics-port` serves its own. What the database
knows (jobs by state, the oldest waiting job, each worker's last heartbeat and GPU memory) is read at
scrape time by `DatabaseCollector`, so any API replica reports the whole deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_SECONDS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

QUEUE_WAIT = Histogram(
    "framepack_queue_wait_seconds", "time from submission to a worker's first claim", buckets=_SECONDS
)
JOB_SECONDS = Histogram(
    "framepack_job_seconds", "time a worker spent on one job attempt", ["outcome"], buckets=_SECONDS
)
SECTION_SECONDS = Histogram(
    "framepack_section_seconds", "sampling time of one section", ["model"], buckets=(0.05, *_SECONDS)
)
STEP_SECONDS = Histogram(
    "framepack_step_seconds", "time of one sampling step", ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)  # fmt: skip
JOBS_FINISHED = Counter("framepack_jobs_finished", "job attempts a worker ended, by outcome", ["outcome"])


class DatabaseCollector(Collector):
    """Reads the job table and the worker roster at each scrape. ``now`` is for tests."""

    def __init__(self, counts: Callable[[], dict[str, int]], oldest_waiting: Callable[[], datetime | None],
                 workers: Callable[[], list], now: Callable[[], datetime]) -> None:  # fmt: skip
        self._counts, self._oldest, self._workers, self._now = counts, oldest_waiting, workers, now

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily("framepack_jobs", "jobs in the table, by state", labels=["state"])
        for state, count in self._counts().items():
            jobs.add_metric([state], count)
        yield jobs
        oldest = self._oldest()
        wait = GaugeMetricFamily("framepack_queue_oldest_wait_seconds", "how long the oldest waiting job has waited")
        wait.add_metric([], (self._now() - oldest).total_seconds() if oldest else 0.0)
        yield wait
        labels = ["worker", "host", "device"]
        seen = GaugeMetricFamily(
            "framepack_worker_last_heartbeat_timestamp_seconds", "a worker's last report", labels=labels
        )
        busy = GaugeMetricFamily("framepack_worker_busy", "1 while a worker holds a job", labels=labels)
        done = GaugeMetricFamily("framepack_worker_jobs_done", "jobs a worker has finished", labels=labels)
        gpu = GaugeMetricFamily("framepack_worker_gpu_memory_bytes", "GPU memory allocated by a worker", labels=labels)
        peak = GaugeMetricFamily("framepack_worker_gpu_memory_peak_bytes", "a worker's peak GPU memory", labels=labels)
        for w in self._workers():
            if w.state == "stopped":
                continue
            ids = [w.id, w.host, w.device]
            seen.add_metric(ids, w.last_seen.timestamp())
            busy.add_metric(ids, 1.0 if w.state == "busy" else 0.0)
            done.add_metric(ids, w.jobs_done)
            if w.gpu_memory_bytes is not None:
                gpu.add_metric(ids, w.gpu_memory_bytes)
                peak.add_metric(ids, w.gpu_memory_peak_bytes or 0)
        yield from (seen, busy, done, gpu, peak)
