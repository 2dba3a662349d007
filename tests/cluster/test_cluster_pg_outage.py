"""PostgreSQL stopped for 10 s while jobs run: the API answers errors meanwhile (quickly, and keeps
running), the workers report errors and keep running, and once the database is back every job
completes, each run by the engine exactly once."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest

from framepack_server.localstack import Cluster, Postgres

from .conftest import ENV, SUBMIT, claims, completions, data_uri, logs, result, start_cluster, submit, wait_terminal

pytestmark = pytest.mark.slow

OUTAGE_S = 10
LEASE_SECONDS = 20  # longer than the outage: a job whose worker merely lost the database is not taken from it
JOBS = 12
JOB = {"num_frames": 150}  # 5 sections: jobs are in the middle of their work when the database goes


def test_postgres_stopped_for_ten_seconds_nothing_lost_nothing_run_twice(tmp_path, tiny_cache, moto):
    bucket = moto.create_bucket("framepack-pg-outage")
    with Postgres() as pg:
        cluster = Cluster(tmp_path / "cluster", pg.url, f"{bucket}/run", moto.endpoint_url, tiny_cache, dict(ENV))
        try:
            start_cluster(cluster, ("--lease-seconds", str(LEASE_SECONDS)))
            api = cluster.processes[0]
            with api.client(timeout=30) as client:
                ids = [submit(client, seed=n, **JOB) for n in range(JOBS)]
                deadline = time.monotonic() + 120
                while sum(result(client, job)["status"] == "completed" for job in ids) < 2:
                    assert time.monotonic() < deadline, logs(cluster)
                    time.sleep(0.2)

                pg.stop()
                down, down_at = time.monotonic(), datetime.now()
                answers = []
                while time.monotonic() - down < OUTAGE_S:
                    for method, path, body in (("GET", f"/api/v3/predictions/{ids[-1]}/result", None),
                                               ("POST", SUBMIT, {"image": data_uri(), "prompt": "p"})):  # fmt: skip
                        asked = time.monotonic()
                        try:
                            response = client.request(method, path, json=body, timeout=15)
                            answers.append((method, response.status_code, time.monotonic() - asked, response.text))
                        except httpx.HTTPError as exc:
                            answers.append((method, type(exc).__name__, time.monotonic() - asked, str(exc)))
                    time.sleep(0.5)
                pg.start()
                up_at = datetime.now()

                assert all(p.running for p in cluster.processes), logs(cluster)
                for method, status, took, text in answers:
                    # an error, said at once in the API's envelope: not a hang, not a dropped connection
                    assert isinstance(status, int) and status >= 500, (method, status, text)
                    assert took < 10, (method, took)
                    assert "code" in httpx.Response(status, text=text).json(), text
                done = {job: wait_terminal(client, job, timeout=180) for job in ids}
            assert all(data["status"] == "completed" for data in done.values()), ({
                job: data["error"] for job, data in done.items()}, logs(cluster))  # fmt: skip

            finished = completions(cluster, ids)
            runs = claims(cluster)
            for job in ids:
                assert len(runs[job]) == 1, (job, runs[job], logs(cluster))
                assert len(finished[job]) == 1, (job, finished[job])
            codes = sorted({f"{method} {status}" for method, status, _, _ in answers})
            print(f"during the outage: {len(answers)} requests answered {codes}, "
                  f"slowest in {max(took for _, _, took, _ in answers):.2f} s")  # fmt: skip
            reported = [line for worker in cluster.workers() for line in worker.lines()
                        if line.level in ("WARNING", "ERROR") and down_at <= line.at <= up_at]  # fmt: skip
            assert reported, "no worker reported the database outage"
        finally:
            cluster.close()
