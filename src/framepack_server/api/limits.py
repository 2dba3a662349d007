"""Limits on what one client may ask: body size, request rate per key, queued jobs per key.

Rates use the `limits` library (the engine under slowapi; a moving window in memory for the embedded
server): one budget per API key across all routes, answered with 429, Retry-After and WaveSpeed's
error envelope. Health, docs, signed file URLs and the web page are exempt. slowapi's own middleware
is not used: its application-wide limits did not engage on FastAPI 0.165 in our test, and a
middleware of a few lines over `limits` says plainly what it does.
"""

from __future__ import annotations

import hashlib
import math
import time

from fastapi.responses import JSONResponse
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InputError
from .services import Services

EXEMPT_PREFIXES = ("/health", "/api/v3/files/", "/docs", "/openapi.json", "/redoc", "/web/")
EXEMPT_PATHS = ("/",)  # exact paths: "/" as a prefix would exempt everything


def client_key(scope: Scope) -> str:
    """The rate-limit bucket: the API key (hashed; never kept in clear), else the client address."""
    headers = dict(scope.get("headers") or [])
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "key:" + hashlib.sha256(token.strip().encode()).hexdigest()[:24]
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


class RateLimit:
    """At most ``rate`` (e.g. "600/minute") requests per client key; 429 with Retry-After beyond."""

    def __init__(self, app: ASGIApp, rate: str) -> None:
        self.app, self.item = app, parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        key = client_key(scope)
        if self.limiter.hit(self.item, key):
            await self.app(scope, receive, send)
            return
        reset, _remaining = self.limiter.get_window_stats(self.item, key)
        retry = max(1, math.ceil(reset - time.time()))
        response = JSONResponse(
            {"code": 429, "message": f"rate limit exceeded: at most {self.item} per key; retry in {retry} s"},
            status_code=429,
            headers={"Retry-After": str(retry)},
        )
        await response(scope, receive, send)


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:  # sent by hand: the app may not have answered yet
        response = JSONResponse(
            {"code": 413, "message": f"body: the request body is larger than {self.max_bytes} bytes", "field": "body"},
            status_code=413,
        )
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


def check_queue_cap(services: Services, key_id: str) -> None:
    """A key may have at most ``max_queued_per_key`` jobs waiting; more is a 429, not a silent drop."""
    waiting = services.jobs.counts(key_id)["created"]
    if waiting >= services.settings.max_queued_per_key:
        raise QueueFull(services.settings.max_queued_per_key)


class QueueFull(InputError):
    def __init__(self, cap: int) -> None:
        super().__init__("queue", f"this key already has {cap} jobs waiting; wait for some to finish")
