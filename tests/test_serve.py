"""`framepack serve` refuses --no-auth away from loopback."""

from __future__ import annotations

import subprocess
import sys


def test_no_auth_is_refused_on_a_public_bind(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "framepack_server.cli", "serve", "--no-auth", "--host", "0.0.0.0",
         "--data-dir", str(tmp_path), "--model-family", "tiny"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "--no-auth is refused on a non-loopback address" in out.stderr
