"""The `framepack` command, run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from framepack_server.media.video import probe_video

pytestmark = pytest.mark.slow


def _run(*args: str, cache, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FRAMEPACK_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "framepack_server.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_generate_writes_the_video_and_reports_it(settings, image, tmp_path):
    image.save(tmp_path / "in.png")
    out = _run(
        "generate", "--model", "tiny-f1", "--image", str(tmp_path / "in.png"), "--prompt", "a kite",
        "--num-frames", "45", "--resolution", "480p", "--seed", "5", "--num-inference-steps", "4",
        "--out", str(tmp_path / "v.mp4"), cache=settings.cache_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"seed=5 frames=45 size=80x48 fps=30 time=[\d.]+s out=.*v\.mp4", last), last
    assert "section 2/2" in out.stderr and "ETA" in out.stderr
    assert probe_video(tmp_path / "v.mp4").frames == 45


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--num-frames", "5000"], "num_frames"),
        (["--guidance-scale", "99"], "guidance_scale"),
        (["--resolution", "4k"], "resolution"),
        (["--last-image", "/nonexistent/end.png"], "last_image"),
    ],
)
def test_bad_fields_are_named(settings, image, tmp_path, args, field):
    image.save(tmp_path / "in.png")
    out = _run("generate", "--model", "tiny", "--image", str(tmp_path / "in.png"), "--prompt", "x", *args,
               cache=settings.cache_dir)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {field}: ")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("content", [b"", b"this is not an image", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_unreadable_images_are_named(settings, tmp_path, content):
    (tmp_path / "bad.png").write_bytes(content)
    out = _run("generate", "--model", "tiny", "--image", str(tmp_path / "bad.png"), "--prompt", "x",
               cache=settings.cache_dir)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: image: ")
    assert "Traceback" not in out.stderr


def test_download_builds_a_tiny_model(tmp_path):
    out = _run("download", "tiny", cache=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "tiny-models/framepack-tiny/tiny-transformer/config.json").exists()
