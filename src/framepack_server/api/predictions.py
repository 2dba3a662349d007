"""Submit, poll, list and cancel predictions (WaveSpeed v3 paths)."""

from __future__ import annotations

import base64
import binascii
import io
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from pydantic import ValidationError

from ..engine.request import GenerationParams
from ..errors import InputError
from ..jobs.store import STORAGE_REF
from ..media.fetch import check_url
from ..media.images import load_image
from .auth import require_key
from .limits import check_queue_cap
from .protocol import PredictionEnvelope, PredictionInput, PredictionPage, PredictionPageEnvelope
from .services import Services
from .views import base_url, own_file_key, prediction

router = APIRouter(prefix="/api/v3")
SYNC_POLL_SECONDS = 0.25
SYNC_TIMEOUT_CODE = 5004


def services_of(request: Request) -> Services:
    return request.app.state.services


def _store_image(services: Services, field: str, ref: str) -> str:
    """Keep what the user sent: our own URLs become storage references, pictures sent inline are
    decoded (a bad one is a 400 now, not a failed job later) and stored; http(s) URLs are fetched by
    the worker. Anything else (a server-side path, say) is refused."""
    if ref.startswith(("http://", "https://")):
        key = own_file_key(services, ref)
        if key is not None:
            if not services.storage.exists(key):
                raise InputError(field, "the uploaded file is missing (was the upload finished?)")
            return STORAGE_REF + key
        if "/api/v3/files/" in ref:
            raise InputError(field, "this upload URL has expired or its signature is not valid")
        check_url(ref, field, services.settings.fetch_policy)  # refused addresses: 400 now, no connection
        return ref
    if ref.startswith("data:"):
        image = load_image(ref, field)
    else:
        try:
            data = base64.b64decode("".join(ref.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(field, "must be an http(s) URL, a data URI or a base64-encoded image") from None
        image = load_image(data, field)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    key = f"inputs/{uuid.uuid4().hex}/{field}.png"
    services.storage.put_bytes(key, buffer.getvalue(), "image/png")
    return STORAGE_REF + key


def _parse_body(body: Any) -> PredictionInput:
    if not isinstance(body, dict):
        raise InputError("body", "must be a JSON object")
    try:
        return PredictionInput.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(".".join(str(p) for p in err["loc"]) or "body", err["msg"]) from None


@router.post("/{owner}/{name}", response_model=PredictionEnvelope, summary="Run a model (FramePack)")
def submit(
    owner: str,
    name: str,
    request: Request,
    body: Annotated[dict[str, Any], Body(description="flat JSON: the fields of PredictionInput")],
    key_id: Annotated[str, Depends(require_key)],
    webhook: Annotated[str | None, Query(description="POST the terminal result here")] = None,
) -> PredictionEnvelope:
    services = services_of(request)
    path = f"{owner}/{name}"
    if path not in services.models:
        raise HTTPException(404, f"unknown model {path!r}; this server runs {', '.join(services.models)}")
    wire = _parse_body(body)
    check_queue_cap(services, key_id)
    if webhook and wire.enable_base64_output:
        raise HTTPException(
            400, "webhook callback does not support base64 output, please use the normal API to use base64 output"
        )
    if webhook:
        check_url(webhook, "webhook", services.settings.fetch_policy)
    params = GenerationParams.parse(**wire.engine_fields(), model=services.models[path]).resolved()
    stored = params.model_dump()
    stored["image"] = _store_image(services, "image", params.image)
    if params.last_image:
        stored["last_image"] = _store_image(services, "last_image", params.last_image)
    options = {
        "enable_base64_output": wire.enable_base64_output,
        "enable_safety_checker": wire.enable_safety_checker,
        "enable_sync_mode": wire.enable_sync_mode,
    }
    job = services.jobs.submit(key_id, path, stored, options=options, webhook=webhook)
    if wire.enable_sync_mode:
        return PredictionEnvelope(data=_wait(services, request, job.id, key_id))
    return PredictionEnvelope(data=prediction(services, base_url(services, request), job))


def _wait(services: Services, request: Request, job_id: str, key_id: str):
    """Hold a sync-mode request until the job ends, or answer the protocol's sync timeout."""
    deadline = time.monotonic() + services.settings.sync_timeout_seconds
    while True:
        job = services.jobs.get(job_id, key_id)
        if job.state.terminal or time.monotonic() >= deadline:
            break
        time.sleep(SYNC_POLL_SECONDS)
    data = prediction(services, base_url(services, request), job)
    if not job.state.terminal:
        data.code = SYNC_TIMEOUT_CODE  # how WaveSpeed's SDK recognises a sync timeout, whatever the status
        data.error = (
            f"Sync mode timed out after {services.settings.sync_timeout_seconds:g} s; the job goes on: "
            f"poll {data.urls.get}"
        )
    return data


def _owned(request: Request, job_id: str, key_id: str):
    job = services_of(request).jobs.get(job_id, key_id)
    if job is None:
        raise HTTPException(404, f"prediction {job_id} not found")
    return job


@router.get("/predictions/{job_id}/result", response_model=PredictionEnvelope, summary="Poll a prediction")
@router.get("/predictions/{job_id}", response_model=PredictionEnvelope, summary="Poll a prediction (alias)")
def result(job_id: str, request: Request, key_id: Annotated[str, Depends(require_key)]) -> PredictionEnvelope:
    services = services_of(request)
    return PredictionEnvelope(data=prediction(services, base_url(services, request), _owned(request, job_id, key_id)))


@router.get("/predictions", response_model=PredictionPageEnvelope, summary="The key's predictions, newest first")
def history(
    request: Request,
    key_id: Annotated[str, Depends(require_key)],
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PredictionPageEnvelope:
    services = services_of(request)
    jobs, total = services.jobs.list(key_id, page=page, page_size=page_size)
    items = [prediction(services, base_url(services, request), job) for job in jobs]
    return PredictionPageEnvelope(data=PredictionPage(items=items, page=page, page_size=page_size, total=total))


@router.post("/predictions/{job_id}/cancel", response_model=PredictionEnvelope, summary="Cancel (extension)")
def cancel(job_id: str, request: Request, key_id: Annotated[str, Depends(require_key)]) -> PredictionEnvelope:
    services = services_of(request)
    _owned(request, job_id, key_id)
    job = services.jobs.cancel(job_id, key_id)
    return PredictionEnvelope(data=prediction(services, base_url(services, request), job))
