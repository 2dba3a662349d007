"""Scale-out benchmark: jobs per minute with 1, 2 and 4 worker processes on one PostgreSQL and one bucket.

Everything runs on this machine through `framepack_server.localstack`: a throwaway PostgreSQL cluster
(Debian's binaries), moto's S3 server (or a shared folder with `--storage local`), one
`framepack serve --no-worker` and N `framepack worker` processes with the tiny model on the CPU, each
worker limited to `--threads` torch threads. For each N:

1. Claim latency: with the N workers idle, `--latency-jobs` small jobs one after another (each waits
   for the previous one to finish): submit to claim, from the job table (`created_at` → `started_at`,
   both stamped by our processes on this machine's clock). This is the idle poll interval plus the
   claim transaction; p50 and p99.
2. Throughput: `--jobs` jobs submitted at once; jobs per minute over the first `created_at` to the
   last `finished_at`, and the ratio to 1 worker measured in the same run.

Workers are warmed up first (each has run a job, so its model is loaded). The table is printed; no
time is asserted. On a machine with fewer cores than workers the ratio saturates: the workers then
share the cores (and share them with the API, PostgreSQL and the S3 server).

    python benchmarks/scale.py                      # about 4 minutes on 2 CPU cores
    python benchmarks/scale.py --workers 1,2 --jobs 12 --latency-jobs 10    # quicker
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from framepack_server.localstack import ApiProcess, Cluster, FramepackProcess, MotoS3, Postgres

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "data:image/png;base64," + base64.b64encode((ROOT / "examples" / "lighthouse.png").read_bytes()).decode()
SUBMIT = "/api/v3/wavespeed-ai/framepack"
TERMINAL = ("completed", "failed", "cancelled")


def submit(client: httpx.Client, frames: int, steps: int, seed: int) -> str:
    body = {"image": IMAGE, "prompt": "waves roll", "resolution": "480p", "num_frames": frames,
            "num_inference_steps": steps, "seed": seed, "enable_safety_checker": False}  # fmt: skip
    response = client.post(SUBMIT, json=body)
    response.raise_for_status()
    return response.json()["data"]["id"]


def wait_all(client: httpx.Client, ids: list[str], timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    for job in ids:
        while (data := client.get(f"/api/v3/predictions/{job}/result").json()["data"])["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} not finished after {timeout} s")
            time.sleep(0.05)
        if data["status"] != "completed":
            raise RuntimeError(f"job {job} {data['status']}: {data['error']}")


def rows(database: str, ids: list[str]) -> list[tuple]:
    """(created_at, started_at, finished_at) of each job, from the job table."""
    with psycopg.connect(database) as conn:
        query = "SELECT created_at, started_at, finished_at FROM jobs WHERE id = ANY(%s)"
        return conn.execute(query, (ids,)).fetchall()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def warm_up(client: httpx.Client, workers: list[FramepackProcess]) -> None:
    """Run small jobs until every worker has completed one (its model is then loaded)."""
    for round_ in range(10):
        wait_all(client, [submit(client, 30, 4, 10_000 + round_ * 10 + n) for n in range(len(workers))])
        if all(w.lines(r": job \w+ completed in ") for w in workers):
            return
    raise RuntimeError("some workers never took a job")


def measure(cluster: Cluster, api: ApiProcess, count: int, args: argparse.Namespace) -> dict:
    workers = [
        cluster.worker(f"n{count}-w{i}", wait=None) for i in range(1, count + 1)
    ]  # fmt: skip
    for worker in workers:
        worker.wait_ready(180)
    with api.client(timeout=60) as client:
        warm_up(client, workers)
        latency_ids = []
        for n in range(args.latency_jobs):
            latency_ids.append(submit(client, 30, 4, 20_000 + n))
            wait_all(client, latency_ids[-1:])
        claims = [
            (started - created).total_seconds() * 1000 for created, started, _ in rows(cluster.database, latency_ids)
        ]

        ids = [submit(client, args.frames, args.steps, n) for n in range(args.jobs)]
        wait_all(client, ids)
    found = rows(cluster.database, ids)
    wall = (max(f for _, _, f in found) - min(c for c, _, _ in found)).total_seconds()
    for worker in workers:
        worker.terminate(60)
    return {"workers": count, "wall": wall, "per_minute": args.jobs / wall * 60,
            "claim_p50": statistics.median(claims), "claim_p99": percentile(claims, 99)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure (default 1,2,4)")
    parser.add_argument("--jobs", type=int, default=24, help="jobs per throughput run (default 24)")
    parser.add_argument("--latency-jobs", type=int, default=20, help="one-at-a-time jobs for claim latency")
    parser.add_argument("--frames", type=int, default=90, help="frames per job (default 90: 3 sections)")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps per section (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--storage", choices=("s3", "local"), default="s3", help="moto's S3 server or a folder")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="framepack-scale-") as folder, Postgres() as pg:
        root = Path(folder)
        env = {"OMP_NUM_THREADS": str(args.threads), "FRAMEPACK_MAX_QUEUED_PER_KEY": "100000"}
        s3 = MotoS3(log_path=root / "moto.log").start() if args.storage == "s3" else None
        try:
            storage = s3.create_bucket("framepack-scale") + "/bench" if s3 else str(root / "files")
            endpoint = s3.endpoint_url if s3 else None
            cluster = Cluster(root / "cluster", pg.url, storage, endpoint, root / "cache", env)
            cluster.prepare()
            try:
                assert cluster.command("db", "upgrade").returncode == 0
                api = cluster.api("--no-auth")
                results = [measure(cluster, api, count, args) for count in counts]
            finally:
                cluster.close()
        finally:
            if s3:
                s3.stop()

    base = next((r["per_minute"] for r in results if r["workers"] == 1), results[0]["per_minute"])
    print(
        f"\ntiny model, 480p (80x48), {args.frames} frames, {args.steps} steps per section; {args.jobs} jobs per run; "
        f"storage {'moto S3 server' if s3 else 'a shared folder'}; PostgreSQL {pg.bin_dir.parent.name}; "
        f"{os.cpu_count()} CPU cores, {args.threads} torch thread(s) per process"
    )
    print(f"{'workers':>7} {'wall s':>7} {'jobs/min':>9} {'ratio':>6} {'claim p50 ms':>13} {'claim p99 ms':>13}")
    for r in results:
        print(f"{r['workers']:>7} {r['wall']:>7.1f} {r['per_minute']:>9.1f} {r['per_minute'] / base:>6.2f} "
              f"{r['claim_p50']:>13.0f} {r['claim_p99']:>13.0f}")  # fmt: skip
    if max(counts) > (os.cpu_count() or 1):
        print(f"(more workers than the {os.cpu_count()} CPU cores here: the workers share them, the ratio saturates)")


if __name__ == "__main__":
    main()
