"""Signed file URLs: outputs, uploads and previews download without an Authorization header
(clients fetch them bare), so every URL carries an expiring HMAC signature instead."""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response

from .services import Services
from .views import FILES_PREFIX

router = APIRouter()


@router.get(FILES_PREFIX + "{key:path}", summary="Download a file by signed URL", include_in_schema=False)
def download(
    key: str, request: Request, expires: Annotated[str, Query()] = "", sig: Annotated[str, Query()] = ""
) -> Response:
    services: Services = request.app.state.services
    if not services.signer.verify(FILES_PREFIX + key, expires, sig):
        raise HTTPException(403, "this URL has expired or its signature is not valid")
    try:
        exists = services.storage.exists(key)
    except ValueError:
        exists = False
    if not exists:
        raise HTTPException(404, "file not found")
    media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    path = services.storage.local_path(key)
    if path is not None:
        return FileResponse(path, media_type=media_type)
    return Response(services.storage.get_bytes(key), media_type=media_type)
