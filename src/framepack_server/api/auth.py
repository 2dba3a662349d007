"""API keys on every route but health and signed file URLs: ``Authorization: Bearer <key>``."""

from __future__ import annotations

from fastapi import HTTPException, Request

ANONYMOUS = "local"  # the key id of every request when the server runs with --no-auth


def require_key(request: Request) -> str:
    """FastAPI dependency: the caller's key id, or 401 in WaveSpeed's error envelope."""
    services = request.app.state.services
    if services.settings.no_auth:
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing API key: send Authorization: Bearer <key>")
    key_id = services.keys.verify_key(token.strip())
    if key_id is None:
        raise HTTPException(401, "invalid authentication: unknown or revoked API key")
    return key_id
