"""How a job row looks on the wire: the prediction object, with fresh signed URLs."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fastapi import Request

from ..jobs.store import STORAGE_REF, Job
from .protocol import Prediction, ProgressInfo, Timings, Urls
from .services import Services

FILES_PREFIX = "/api/v3/files/"


def base_url(services: Services, request: Request) -> str:
    return (services.settings.public_url or str(request.base_url)).rstrip("/")


def signed_file_url(services: Services, base: str, key: str, ttl: int) -> str:
    path = FILES_PREFIX + key
    return f"{base}{path}?{services.signer.sign(path, ttl)}"


def download_url(services: Services, base: str, key: str, ttl: int) -> str:
    """Where a client downloads an output or preview: a presigned bucket URL when the storage signs
    its own (S3, unless ``storage_presign`` is off), else our signed /files route."""
    presign = getattr(services.storage, "presigned_url", None)
    if presign is not None and services.settings.storage_presign:
        return presign(key, ttl)
    return signed_file_url(services, base, key, ttl)


def own_file_key(services: Services, url: str) -> str | None:
    """The storage key behind one of our signed file URLs, if ``url`` is one and still valid.

    Recognised by path, whatever the host: clients may reach us through a proxy or on 127.0.0.1.
    """
    parts = urlsplit(url)
    if not parts.path.startswith(FILES_PREFIX):
        return None
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    if not services.signer.verify(parts.path, query.get("expires", ""), query.get("sig", "")):
        return None
    return parts.path[len(FILES_PREFIX) :]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _input(services: Services, base: str, params: dict) -> dict:
    """The request as submitted; stored images are shown as signed URLs."""
    shown = dict(params)
    for field in ("image", "last_image"):
        ref = shown.get(field)
        if isinstance(ref, str) and ref.startswith(STORAGE_REF):
            key = ref[len(STORAGE_REF) :]
            shown[field] = signed_file_url(services, base, key, services.settings.upload_url_ttl_seconds)
    return shown


def prediction(services: Services, base: str, job: Job, *, with_input: bool = True) -> Prediction:
    """``base``: the URL clients reach us at (see `base_url`)."""
    ttl = services.settings.output_url_ttl_seconds
    outputs: list[str] = []
    if job.state == "completed":
        if job.options.get("enable_base64_output"):
            outputs = [base64.b64encode(services.storage.get_bytes(k)).decode() for k in job.outputs]
        else:
            outputs = [download_url(services, base, k, ttl) for k in job.outputs]
    progress = None
    if job.state == "processing" and job.progress:
        info = dict(job.progress)
        preview = info.pop("preview_key", None)
        info["preview"] = download_url(services, base, preview, ttl) if preview else None
        progress = ProgressInfo(**info)
    elapsed = 0
    if job.started_at and job.finished_at:
        elapsed = int((job.finished_at - job.started_at).total_seconds() * 1000)
    return Prediction(
        id=job.id,
        model=job.model,
        outputs=outputs,
        urls=Urls(get=f"{base}/api/v3/predictions/{job.id}/result"),
        has_nsfw_contents=list(job.has_nsfw_contents) if job.state == "completed" else [],
        status=job.state,
        created_at=_iso(job.created_at),
        error=job.error or "",
        executionTime=elapsed,
        timings=Timings(inference=job.inference_ms),
        input=_input(services, base, job.params) if with_input else None,
        progress=progress,
        seed=job.params.get("seed"),
    )
