"""`framepack serve`: the API, an embedded worker per device, and webhook delivery in one process.

The embedded default needs nothing else installed: SQLite job store, a local file folder, one
worker on the local device.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading

from .api.app import create_app
from .api.notify import WebhookDispatcher
from .api.services import Services, build_services
from .api.webhooks import GuardedWebhookSender
from .config import ServerSettings
from .jobs.keys import shared_secret

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
    from .engine.memory import pick_device
    from .generator import FramePack
    from .jobs.worker import EngineCache, Worker

    settings = services.settings
    engines = EngineCache(lambda model: FramePack(model, settings=settings))
    return Worker(
        services.jobs, services.storage, engines, settings.data_dir / "work",
        lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts, worker_id=settings.worker_id,
        safety=load_safety(settings), safety_policy=settings.safety_policy, fetch_policy=settings.fetch_policy,
        roster=services.roster, device=str(pick_device(settings.device)), retry_backoff=settings.retry_backoff_seconds,
    )  # fmt: skip


def run_worker(settings: ServerSettings) -> None:
    """`framepack worker`: one worker, no API, on the shared database (one process per device).

    SIGTERM (or Ctrl-C) stops it gracefully: the job in hand finishes its section, is checkpointed and
    goes back to the queue; a second signal stops at the next sampling step (from the last section).
    """
    services = build_services(settings)
    worker = make_worker(services)
    signals = {"count": 0}

    def on_signal(signum: int, _frame: object) -> None:
        signals["count"] += 1
        now = signals["count"] > 1
        log.info("%s: %s; %s", worker.worker_id, signal.Signals(signum).name,
                 "stopping at the next step" if now else "finishing the current section, then stopping")  # fmt: skip
        worker.request_stop(now=now)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host)
    print(
        f"{worker.worker_id} on {worker.device}, database {_safe_url(settings.database_url)}, "
        f"storage {services.storage!r}",
        flush=True,
    )
    worker.run_forever()


def _safe_url(url: str) -> str:
    """A database URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


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
    secret = shared_secret(services.db, "webhook-signing", settings.data_dir / "webhook.key")
    sender = GuardedWebhookSender(secret, settings.fetch_policy, attempts=settings.webhook_attempts)
    dispatcher = WebhookDispatcher(services, base, sender)
    dispatcher.start()
    worker, thread = None, None
    if settings.run_worker:
        worker = make_worker(services)
        thread = threading.Thread(target=worker.run_forever, daemon=True, name="worker")
        thread.start()
    # uvicorn handles SIGTERM/SIGINT: it stops serving and returns; then the embedded worker finishes
    # its section, checkpoints and gives its job back (a second Ctrl-C ends the process at once).
    uvicorn.run(create_app(services), host=settings.host, port=settings.port, log_level="warning")
    if worker is not None and thread is not None and thread.is_alive():
        print("stopping the worker after its current section (Ctrl-C again to stop now)", flush=True)
        worker.request_stop()
        try:
            thread.join()
        except KeyboardInterrupt:
            worker.request_stop(now=True)
            thread.join(timeout=30)
