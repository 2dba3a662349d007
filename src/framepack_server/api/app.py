"""The FastAPI application: routes, error envelopes, health, and the web page at `/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import InputError
from ..jobs.db import is_unavailable
from ..storage.base import StorageUnavailable
from . import files, metrics, predictions, uploads
from .limits import BodySizeLimit, QueueFull, RateLimit
from .protocol import ErrorEnvelope
from .services import Services

WEB_DIR = Path(__file__).resolve().parent.parent / "web"  # the page at `/`: static files, no build step


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(
        ErrorEnvelope(code=status, message=message, field=field).model_dump(exclude_none=True), status_code=status
    )


# Every error is WaveSpeed's envelope; documented so that clients (and schemathesis) know them.
ERRORS = {
    status: {"model": ErrorEnvelope, "description": text}
    for status, text in {
        400: "invalid input; `field` names it",
        401: "missing or invalid API key",
        403: "expired or invalid signed URL",
        404: "unknown prediction, model or file (or another key's)",
        413: "request body too large",
        429: "rate limit or queue cap; see Retry-After",
        503: "the job database or the file storage is unreachable for now; see Retry-After",
    }.items()
}


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="framepack-server",
        version=__version__,
        description="Self-hosted FramePack image-to-video, speaking WaveSpeedAI's v3 API.",
    )
    app.state.services = services

    @app.exception_handler(QueueFull)
    async def _queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
        response = _error(429, f"{exc.field}: {exc.message}", exc.field)
        response.headers["Retry-After"] = "30"
        return response

    @app.exception_handler(DBAPIError)
    async def _database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        if not is_unavailable(exc):
            raise exc
        response = _error(503, "the job database is unavailable; retry shortly")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(StorageUnavailable)
    async def _storage_error(_request: Request, exc: StorageUnavailable) -> JSONResponse:
        response = _error(503, f"the file storage is unavailable, retry shortly ({exc})")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(InputError)
    async def _input_error(_request: Request, exc: InputError) -> JSONResponse:
        return _error(400, f"{exc.field}: {exc.message}", exc.field)

    @app.exception_handler(HTTPException)  # Starlette's: also the router's 404/405 and body-parse errors
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        return _error(400, f"{field}: {err.get('msg', 'invalid')}", field)

    @app.get("/health", summary="Liveness and queue counts (no key needed)")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "jobs": services.jobs.counts()}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    app.add_middleware(RateLimit, rate=services.settings.rate_limit)
    app.add_middleware(BodySizeLimit, max_bytes=services.settings.max_body_bytes)
    # Uploads first: `POST /api/v3/media/uploads` would also match `POST /api/v3/{owner}/{name}`.
    app.include_router(uploads.router, responses=ERRORS)
    app.include_router(files.router, responses=ERRORS)
    app.include_router(predictions.router, responses=ERRORS)
    app.include_router(metrics.router)
    return app
