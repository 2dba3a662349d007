"""`framepack db upgrade`, `framepack worker` and `framepack status` on one job database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from framepack_server.engine.request import GenerationParams
from framepack_server.jobs.db import Database
from framepack_server.jobs.store import JobStore

pytestmark = pytest.mark.slow


def _cli(*args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "framepack_server.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_db_upgrade_then_a_standalone_worker_runs_a_job_and_status_shows_it(tmp_path, settings, image):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FRAMEPACK_CACHE_DIR": str(settings.cache_dir)}
    data = ["--data-dir", str(tmp_path)]
    upgraded = _cli("db", "upgrade", *data, env=env)
    assert upgraded.returncode == 0 and "latest schema" in upgraded.stdout, upgraded.stderr

    image.save(tmp_path / "in.png")
    store = JobStore(Database(f"sqlite:///{tmp_path / 'jobs.db'}"))
    (tmp_path / "files" / "inputs").mkdir(parents=True)
    (tmp_path / "files" / "inputs" / "in.png").write_bytes((tmp_path / "in.png").read_bytes())
    params = GenerationParams.parse(image="storage:inputs/in.png", prompt="dunes", model="tiny", resolution="480p",
                                    num_frames=30, num_inference_steps=4, seed=1).model_dump()  # fmt: skip
    job = store.submit("k", "wavespeed-ai/framepack", params, options={"enable_safety_checker": False})
    assert "created 1" in _cli("status", *data, env=env).stdout

    worker = subprocess.Popen([sys.executable, "-m", "framepack_server.cli", "worker", "--model-family", "tiny", *data],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while store.get(job.id).state != "completed":
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not finish the job"
            time.sleep(0.2)
        status = _cli("status", *data, env=env).stdout
        assert "workers: 1" in status and " idle " in status and "last heartbeat" in status, status
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(30) == 0
    assert "completed 1" in _cli("status", *data, env=env).stdout


def test_sigterm_finishes_the_section_checkpoints_and_gives_the_job_back(tmp_path, settings, image):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FRAMEPACK_CACHE_DIR": str(settings.cache_dir)}
    data = ["--data-dir", str(tmp_path)]
    store = JobStore(Database(f"sqlite:///{tmp_path / 'jobs.db'}"))
    (tmp_path / "files" / "inputs").mkdir(parents=True)
    image.save(tmp_path / "files" / "inputs" / "in.png")
    params = GenerationParams.parse(image="storage:inputs/in.png", prompt="dunes", model="tiny", resolution="480p",
                                    num_frames=300, num_inference_steps=8, seed=1).model_dump()  # fmt: skip
    job = store.submit("k", "wavespeed-ai/framepack", params, options={"enable_safety_checker": False})
    worker = subprocess.Popen([sys.executable, "-m", "framepack_server.cli", "worker", "--model-family", "tiny",
                               "--worker-id", "w-term", *data], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not ((p := store.get(job.id).progress) and p.get("phase") == "sampling"):
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start the job"
            time.sleep(0.05)
        sent = time.monotonic()
        os.killpg(worker.pid, signal.SIGTERM)
        output, _ = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert worker.returncode == 0, output
    assert time.monotonic() - sent < 120
    back = store.get(job.id)
    assert (back.state, back.attempts, back.worker_id) == ("created", 0, None), output
    assert "w-term: SIGTERM; finishing the current section" in output and "given back" in output
    state = json.loads((tmp_path / "files" / "checkpoints" / job.id / "state.json").read_text())
    assert 1 <= state["sections_done"] < params["num_frames"] // 33  # stopped after a section, well before the end
    status = _cli("status", *data, env=env).stdout
    assert "w-term" in status and "stopped" in status, status
