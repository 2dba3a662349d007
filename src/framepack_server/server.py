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
from .api.webhooks import GuardedWebhookSender
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


def load_safety(settings: ServerSettings):
    """The configured safety checker, or the reason it could not be loaded (said at start)."""
    from .media.safety import build_tiny_classifier, load_checker

    model_dir = settings.model_dir
    if settings.safety_backend == "classifier" and settings.model_family != "real":
        # The offline families use a tiny random classifier of the same class, built like the tiny models.
        model_dir = settings.cache_dir / "tiny-safety"
        if not (model_dir / settings.safety_repo / "config.json").exists():
            build_tiny_classifier(model_dir / settings.safety_repo)
    try:
        checker = load_checker(
            settings.safety_backend, model_dir=model_dir, threshold=settings.safety_threshold,
            repo=settings.safety_repo,
        )  # fmt: skip
    except Exception as exc:  # a missing model, a missing extra, an unknown name: say it, keep serving
        reason = f"{settings.safety_backend}: {exc}"
        print(f"WARNING: safety checker unavailable ({reason}); jobs that ask for a check will fail", flush=True)
        return reason
    print(f"safety checker: {checker.name}, policy {settings.safety_policy}", flush=True)
    return checker


def make_worker(services: Services):
    """The worker for this process's device, with the settings' safety checker and fetch policy."""
    from .generator import FramePack
    from .jobs.worker import EngineCache, Worker

    settings = services.settings
    engines = EngineCache(lambda model: FramePack(model, settings=settings))
    return Worker(
        services.jobs, services.storage, engines, settings.data_dir / "work",
        lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts,
        safety=load_safety(settings), safety_policy=settings.safety_policy, fetch_policy=settings.fetch_policy,
    )  # fmt: skip


def start_worker(services: Services) -> threading.Thread:
    thread = threading.Thread(target=make_worker(services).run_forever, daemon=True, name="worker")
    thread.start()
    return thread


def run_worker(settings: ServerSettings) -> None:
    """`framepack worker`: one worker, no API, on the shared database (one process per device)."""
    services = build_services(settings)
    worker = make_worker(services)
    print(f"{worker.worker_id} on {settings.device or 'the best device'}, database {settings.database_url}", flush=True)
    try:
        worker.run_forever()
    except KeyboardInterrupt:
        worker.stop_event.set()


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
    sender = GuardedWebhookSender(secret, settings.fetch_policy, attempts=settings.webhook_attempts)
    dispatcher = WebhookDispatcher(services, base, sender)
    dispatcher.start()
    if settings.run_worker:
        start_worker(services)
    uvicorn.run(create_app(services), host=settings.host, port=settings.port, log_level="warning")
