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
    memory: str = Field(default="auto", description="auto, resident, offload, group, cpu, fp8 or fp8-group")
    attention: str = Field(
        default="native", description="attention kernel by diffusers' dispatcher name: native, flash, sage ..."
    )
    compile: bool = Field(default=False, description="torch.compile the transformer's blocks")
    high_vram_gb: float = Field(default=60.0, description="free GPU memory above which all stays resident")
    preserved_memory_gb: float = Field(default=6.0, description="GPU memory kept free for activations")
    auto_download: bool = Field(default=True, description="fetch missing weights when online")
    crf: int = Field(default=16, ge=0, le=51)
    url_allow: str = Field(
        default="",
        description="comma-separated networks (CIDR) or host names that URL fetching may reach "
        "although private (tests, private deployments); nothing else gets around the guard",
    )

    @property
    def fetch_policy(self):
        from .media.fetch import FetchPolicy

        return FetchPolicy(allow=tuple(part.strip() for part in self.url_allow.split(",") if part.strip()))


def get_settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _default_data() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "framepack-server"


class ServerSettings(Settings):
    """What `framepack serve` and `framepack worker` add to the engine's settings."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Field(default_factory=_default_data, description="job database, files, checkpoints")
    database: str | None = Field(
        default=None, description="SQLAlchemy URL, e.g. postgresql://user:pw@host/db (default: SQLite in data_dir)"
    )
    storage: str | None = Field(
        default=None, description="s3://bucket/prefix or a local folder (default: data_dir/files)"
    )
    storage_endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO, Ceph, R2 ...)")
    storage_region: str | None = Field(default=None, description="S3 region (default: from the AWS settings)")
    storage_presign: bool = Field(
        default=True,
        description="S3: hand out presigned bucket URLs for outputs (false: serve them through the API's "
        "signed /files route, for buckets clients can't reach)",
    )
    worker_id: str | None = Field(default=None, description="this worker's name (default: host-pid-random)")
    metrics_port: int | None = Field(default=None, description="`framepack worker`: serve /metrics on this port")
    public_url: str | None = Field(default=None, description="base URL clients reach us at (default: from request)")
    model_family: str = Field(default="real", description="real (FramePack weights) or tiny (random, offline)")
    no_auth: bool = False
    run_worker: bool = True
    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_seconds: float = Field(
        default=5.0, ge=0, description="wait before a job given back for unreachable storage runs again (doubles)"
    )
    sync_timeout_seconds: float = Field(default=600.0, gt=0)
    output_url_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    upload_url_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    webhook_attempts: int = Field(default=5, ge=1)
    rate_limit: str = Field(default="3000/minute", description="requests per API key (slowapi/limits syntax)")
    max_queued_per_key: int = Field(default=20, ge=1, description="jobs one key may have waiting")
    safety_backend: str = Field(default="classifier", description="classifier, nudenet or none")
    safety_policy: str = Field(default="flag", description="flag (return and flag) or block (fail the job)")
    safety_threshold: float = Field(default=0.5, ge=0, le=1)
    safety_repo: str = Field(default="Falconsai/nsfw_image_detection", description="the classifier's repo")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0, description="largest request body")

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'jobs.db'}"

    @property
    def storage_url(self) -> str:
        return self.storage or str(self.data_dir / "files")


def get_server_settings(**overrides: object) -> ServerSettings:
    return ServerSettings(**{k: v for k, v in overrides.items() if v is not None})
