"""The design's rooms: the HTTP layer knows no torch, the engine knows no HTTP."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_api_imports_no_torch():
    loaded = _loaded_after("framepack_server.api.app")
    assert "torch" not in loaded and "diffusers" not in loaded


def test_engine_imports_no_web_framework():
    loaded = _loaded_after("framepack_server.engine.generate")
    assert not {"fastapi", "starlette", "sqlalchemy", "uvicorn"} & loaded
