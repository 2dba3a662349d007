"""Settings from flags, the environment (``FRAMEPACK_*``) and defaults, in one place."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "framepack-server"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAMEPACK_", extra="ignore")

    cache_dir: Path = Field(default_factory=_default_cache, description="tiny models and work files")
    model_dir: Path | None = Field(
        default=None, description="a local folder with one sub-folder per repo (<owner>/<name>)"
    )
    device: str | None = Field(default=None, description="cuda, cuda:1, cpu ... (default: best available)")
    memory: str = Field(default="auto", description="auto, resident, offload, group or cpu")
    high_vram_gb: float = Field(default=60.0, description="free GPU memory above which all stays resident")
    preserved_memory_gb: float = Field(default=6.0, description="GPU memory kept free for activations")
    auto_download: bool = Field(default=True, description="fetch missing weights when online")
    crf: int = Field(default=16, ge=0, le=51)


def get_settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
