"""`framepack serve`: the API, an embedded worker per device, and webhook delivery in one process.

The embedded default needs nothing else installed: SQLite job store, a local file folder, one
worker on the local device.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from .api.app import create_app
from .api.notify import WebhookDispatcher
from .api.services import Services, build_services
from .api.webhooks import WebhookSender
from .config import ServerSettings
from .storage.signing import load_or_create_secret

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_worker(services: Services) -> threading.Thread:
    from .generator import FramePack
    from .jobs.worker import EngineCache, Worker

    settings = services.settings
    engines = EngineCache(lambda model: FramePack(model, settings=settings))
    worker = Worker(
        services.jobs, services.storage, engines, settings.data_dir / "work",
        lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts,
    )  # fmt: skip
    thread = threading.Thread(target=worker.run_forever, daemon=True, name="worker")
    thread.start()
    return thread


def first_key(services: Services) -> str | None:
    """On a first start with auth on and no key, create one; the caller prints it once."""
    if services.settings.no_auth or services.keys.has_keys(active_only=True):
        return None
    plaintext, _info = services.keys.create_key("default")
    return plaintext


def serve(settings: ServerSettings) -> None:
    import uvicorn

    if settings.no_auth and not is_loopback(settings.host):
        raise SystemExit(f"--no-auth is refused on a non-loopback address ({settings.host}); use keys")
    services = build_services(settings)
    key = first_key(services)
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    print(f"framepack-server on {base}  (models: {', '.join(services.models)}, docs: {base}/docs)", flush=True)
    if key:
        print(f"API key (shown once; `framepack keys create` makes more): {key}", flush=True)
    secret = load_or_create_secret(settings.data_dir / "webhook.key")
    dispatcher = WebhookDispatcher(services, base, WebhookSender(secret, attempts=settings.webhook_attempts))
    dispatcher.start()
    if settings.run_worker:
        start_worker(services)
    uvicorn.run(create_app(services), host=settings.host, port=settings.port, log_level="warning")
