"""HTTP API benchmarks against a real `framepack serve` (tiny random-weight model, CPU, loopback).

1. Latency of submits and polls under an open-loop load (requests sent at fixed times, each in its own
   task, never waiting for the previous answer): 10 polls/s and 2 submits/s for 20 s, first with the
   server idle (baseline), then while a long job (1800 frames, 50 steps, cancelled afterwards) is
   sampling on the embedded worker. p50, p99 and max in ms, measured from each request's scheduled
   send time, with the ratio busy/idle. The submitted jobs are cheap and are cancelled at once (a
   queued job never starts; the count of those the idle worker claimed first is printed). Idle polls
   read a completed job, busy polls the running one.
2. The worker's overhead: jobs of a few seconds each, one at a time, after one untimed warm-up job of
   the same size (shown, not summed). From the job table: wall time (claimed to finished) minus the
   engine's time (`inference_ms`, render + storing the MP4) as a share of the wall time (the project's
   goal is under 1%), and the wait from submit to claim. The client's end-to-end time (submit to the
   poll that sees `completed`, polling every 0.1 s) against the wall time.

It prints tables and asserts no time. The server runs in a temporary folder (data and model cache, so
the tiny model is built afresh) and is stopped, and the folder removed, at the end.

    python benchmarks/api.py            # about 2 minutes on 2 CPU cores
    python benchmarks/api.py --quick    # about 45 s: 6 s of load per phase, 2 shorter jobs
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "data:image/png;base64," + base64.b64encode((ROOT / "examples" / "lighthouse.png").read_bytes()).decode()
SUBMIT = "/api/v3/wavespeed-ai/framepack"
TERMINAL = ("completed", "failed", "cancelled")
POLLS_PER_S, SUBMITS_PER_S = 10, 2


def body(frames: int, steps: int) -> dict:
    return {"image": IMAGE, "prompt": "waves roll", "resolution": "480p", "num_frames": frames,
            "num_inference_steps": steps}  # fmt: skip


@dataclass
class Server:
    folder: Path
    port: int = 0
    key: str = ""
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "FRAMEPACK_CACHE_DIR": str(self.folder / "cache")}
        log = self.folder / "server.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "framepack_server.cli", "serve", "--model-family", "tiny",
             "--data-dir", str(self.folder / "data"), "--port", str(self.port)],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()}")
            match = re.search(r"API key \(shown once.*\): (\S+)", log.read_text())
            try:
                if match and httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    self.key = match.group(1)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start:\n{log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)

    def job_row(self, job_id: str) -> dict:
        with sqlite3.connect(self.folder / "data" / "jobs.db") as db:
            db.row_factory = sqlite3.Row
            return dict(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def submit(client: httpx.Client, frames: int, steps: int) -> str:
    response = client.post(SUBMIT, json=body(frames, steps))
    response.raise_for_status()
    return response.json()["data"]["id"]


def wait(client: httpx.Client, job_id: str, until: tuple[str, ...] = TERMINAL, every: float = 0.1) -> dict:
    """Poll at fixed ticks until the status is in ``until``; the last answer's data."""
    start, tick = time.monotonic(), 0
    while True:
        data = client.get(f"/api/v3/predictions/{job_id}/result").json()["data"]
        if data["status"] in until and (data["status"] != "processing" or data.get("progress")):
            return data
        tick += 1
        time.sleep(max(0.0, start + tick * every - time.monotonic()))


# ---- 1. latency under an open-loop load ------------------------------------------------------------


@dataclass
class Load:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"poll": [], "submit": []})
    errors: int = 0
    submitted: list[str] = field(default_factory=list)


async def open_loop(server: Server, poll_id: str, seconds: float) -> Load:
    load, cancels = Load(), []
    headers = {"Authorization": f"Bearer {server.key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
        loop = asyncio.get_running_loop()

        async def fire(kind: str, at: float) -> None:
            await asyncio.sleep(max(0.0, at - loop.time()))
            try:
                if kind == "poll":
                    response = await client.get(f"/api/v3/predictions/{poll_id}/result")
                else:
                    response = await client.post(SUBMIT, json=body(30, 4))
            except httpx.HTTPError:
                load.errors += 1
                return
            load.latencies[kind].append((loop.time() - at) * 1000)
            load.errors += response.status_code != 200
            if kind == "submit" and response.status_code == 200:
                job_id = response.json()["data"]["id"]
                load.submitted.append(job_id)
                cancels.append(asyncio.create_task(client.post(f"/api/v3/predictions/{job_id}/cancel")))

        for _ in range(5):  # open the connections' warm path
            await client.get(f"/api/v3/predictions/{poll_id}/result")
        t0 = loop.time() + 0.1
        schedule = [("poll", t0 + i / POLLS_PER_S) for i in range(int(seconds * POLLS_PER_S))]
        schedule += [("submit", t0 + 0.05 + i / SUBMITS_PER_S) for i in range(int(seconds * SUBMITS_PER_S))]
        await asyncio.gather(*(fire(kind, at) for kind, at in schedule))
        await asyncio.gather(*cancels)
    return load


def latency(server: Server, seconds: float) -> None:
    with server.client() as client:
        done_id = submit(client, 30, 4)  # also loads the engine before anything is timed
        wait(client, done_id)
        idle = asyncio.run(open_loop(server, done_id, seconds))
        claimed = sum(server.job_row(i)["started_at"] is not None for i in idle.submitted)
        long_id = submit(client, 1800, 50)
        wait(client, long_id, ("processing", *TERMINAL))  # until it reports progress
        busy = asyncio.run(open_loop(server, long_id, seconds))
        status = client.get(f"/api/v3/predictions/{long_id}/result").json()["data"]["status"]
        client.post(f"/api/v3/predictions/{long_id}/cancel")
        for job_id in [long_id, *busy.submitted, *idle.submitted]:
            wait(client, job_id)
    print(f"\n1. Latency, open loop on loopback: {POLLS_PER_S} polls/s + {SUBMITS_PER_S} submits/s for {seconds:.0f} s")
    print("   (ms from the scheduled send time; busy: a 1800-frame, 50-step job sampling on the worker)\n")
    print(f"{'request':<10}{'stat':<6}{'idle ms':>10}{'busy ms':>10}{'busy/idle':>11}")
    for kind in ("poll", "submit"):
        for stat, q in (("p50", 50), ("p99", 99), ("max", 100)):
            a, b = (float(np.percentile(x.latencies[kind], q)) for x in (idle, busy))
            print(f"{kind:<10}{stat:<6}{a:>10.1f}{b:>10.1f}{b / a:>10.2f}x")
    n = {k: f"{len(idle.latencies[k])}/{len(busy.latencies[k])}" for k in ("poll", "submit")}
    print(f"\nanswered (idle/busy): polls {n['poll']}, submits {n['submit']}; errors {idle.errors}/{busy.errors}\n"
          f"idle submits claimed by the worker before their cancel: {claimed}/{len(idle.submitted)}; "
          f"long job at the end of the busy phase: {status}")  # fmt: skip


# ---- 2. the worker's overhead -----------------------------------------------------------------------


def seconds_between(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def overhead(server: Server, jobs: int, frames: int, steps: int) -> None:
    rows = []
    with server.client() as client:
        for _ in range(jobs + 1):  # the first one is a warm-up: the first job of a new size is slower
            start = time.monotonic()
            job_id = submit(client, frames, steps)
            data = wait(client, job_id)
            client_s = time.monotonic() - start
            if data["status"] != "completed":
                raise RuntimeError(f"job {job_id} ended {data['status']}: {data.get('error')}")
            row = server.job_row(job_id)
            wall = seconds_between(row["started_at"], row["finished_at"])
            queued = seconds_between(row["created_at"], row["started_at"])
            rows.append((wall, row["inference_ms"] / 1000, queued, client_s))
    print(f"\n2. Worker overhead: {jobs} jobs of {frames} frames, {steps} steps, one at a time, polled every 0.1 s")
    print("   (wall: claimed to finished, from the job table; engine: inference_ms; overhead: wall - engine;")
    print("   wait: created to claimed; client: submit sent to the poll seeing completed; sum: without the warm-up)\n")
    print(f"{'job':<9}{'wall s':>8}{'engine s':>10}{'overhead ms':>13}{'share':>8}{'wait ms':>9}{'client s':>10}"
          f"{'client-wall ms':>16}{'client/wall':>13}")  # fmt: skip
    total = tuple(sum(column) for column in zip(*rows[1:], strict=True))
    names = ["warm-up", *map(str, range(1, jobs + 1)), "sum"]
    for name, (wall, engine, queued, client_s) in zip(names, [*rows, total], strict=True):
        over = wall - engine
        print(f"{name:<9}{wall:>8.2f}{engine:>10.2f}{over * 1000:>13.0f}{over / wall:>8.2%}{queued * 1000:>9.0f}"
              f"{client_s:>10.2f}{(client_s - wall) * 1000:>16.0f}{client_s / wall:>12.3f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 s of load per phase, 2 jobs of 300 frames")
    args = parser.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="framepack-api-bench-") as folder:
        server = Server(Path(folder))
        try:
            server.start()
            print(f"server on {server.url} (tiny model, CPU; {os.cpu_count()} cores), started in "
                  f"{time.monotonic() - began:.1f} s")  # fmt: skip
            latency(server, 6.0 if args.quick else 20.0)
            overhead(server, *((2, 300, 10) if args.quick else (3, 600, 10)))
        finally:
            server.stop()
    print(f"\ntotal {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
