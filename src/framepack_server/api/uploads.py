"""Uploads in the three shapes clients use: the SDK's ticket + PUT, and two multipart forms."""

from __future__ import annotations

import mimetypes
import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile

from ..errors import InputError
from .auth import require_key
from .protocol import (
    UploadedFile,
    UploadedFileEnvelope,
    UploadTarget,
    UploadTicket,
    UploadTicketEnvelope,
    UploadTicketRequest,
)
from .services import Services
from .views import base_url, signed_file_url

router = APIRouter(prefix="/api/v3")
PUT_ROUTE = "/media/uploads/{upload_id}"
PUT_PATH = router.prefix + PUT_ROUTE  # what the URL is signed for


def _safe_name(filename: str | None) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", (filename or "upload").rsplit("/", 1)[-1])[:100].strip("._")
    return name or "upload"


def _kind(content_type: str) -> str:
    return content_type.split("/", 1)[0] if "/" in content_type else "file"


def _check_size(services: Services, size: int | None) -> None:
    limit = services.settings.max_upload_bytes
    if size is not None and size > limit:
        raise InputError("size", f"the file is {size} bytes; the limit is {limit}")


@router.post("/media/uploads", response_model=UploadTicketEnvelope, summary="Ask for an upload URL (SDK flow)")
def ticket(
    body: UploadTicketRequest, request: Request, key_id: Annotated[str, Depends(require_key)]
) -> UploadTicketEnvelope:
    services: Services = request.app.state.services
    _check_size(services, body.size)
    name = _safe_name(body.filename)
    content_type = body.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    upload = services.uploads.create_upload(key_id, f"uploads/{uuid.uuid4().hex}/{name}", name, content_type)
    put_path = PUT_PATH.format(upload_id=upload.id)
    ttl = services.settings.upload_url_ttl_seconds
    download = signed_file_url(services, base_url(services, request), upload.storage_key, ttl)
    put_url = f"{base_url(services, request)}{put_path}?{services.signer.sign(put_path, ttl)}"
    return UploadTicketEnvelope(
        data=UploadTicket(
            upload=UploadTarget(url=put_url, headers={"Content-Type": content_type}),
            download_url=download,
            url=download,
        )
    )


@router.put(PUT_ROUTE, summary="Upload the bytes of a ticket (signed URL, no Authorization header)")
async def put_bytes(
    upload_id: str, request: Request, expires: Annotated[str, Query()] = "", sig: Annotated[str, Query()] = ""
) -> dict:
    services: Services = request.app.state.services
    if not services.signer.verify(PUT_PATH.format(upload_id=upload_id), expires, sig):
        raise HTTPException(403, "the upload URL has expired or its signature is not valid")
    upload = services.uploads.get_upload(upload_id)
    if upload is None:
        raise HTTPException(404, "unknown upload")
    limit = services.settings.max_upload_bytes
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > limit:
            raise InputError("file", f"the file is larger than the limit of {limit} bytes")
    services.storage.put_bytes(upload.storage_key, bytes(data), upload.content_type)
    services.uploads.complete_upload(upload_id, len(data))
    return {"code": 200, "message": "success"}


async def _multipart(request: Request, key_id: str, file: UploadFile) -> UploadedFileEnvelope:
    services: Services = request.app.state.services
    limit = services.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise InputError("file", f"the file is larger than the limit of {limit} bytes")
    if not data:
        raise InputError("file", "the file is empty")
    name = _safe_name(file.filename)
    content_type = file.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    upload = services.uploads.create_upload(key_id, f"uploads/{uuid.uuid4().hex}/{name}", name, content_type)
    services.storage.put_bytes(upload.storage_key, data, content_type)
    services.uploads.complete_upload(upload.id, len(data))
    ttl = services.settings.upload_url_ttl_seconds
    url = signed_file_url(services, base_url(services, request), upload.storage_key, ttl)
    kind = _kind(content_type)
    return UploadedFileEnvelope(data=UploadedFile(type=kind, download_url=url, url=url, filename=name, size=len(data)))


@router.post("/media/upload/binary", response_model=UploadedFileEnvelope, summary="Upload a file (multipart)")
async def upload_binary(
    request: Request, key_id: Annotated[str, Depends(require_key)], file: Annotated[UploadFile, File()]
) -> UploadedFileEnvelope:
    return await _multipart(request, key_id, file)


@router.post("/upload", response_model=UploadedFileEnvelope, summary="Upload a file (multipart, newer path)")
async def upload(
    request: Request, key_id: Annotated[str, Depends(require_key)], file: Annotated[UploadFile, File()]
) -> UploadedFileEnvelope:
    return await _multipart(request, key_id, file)
