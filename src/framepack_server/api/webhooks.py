"""Webhooks: a signed JSON POST to the user's URL when a job finishes, retried with backoff.

Every delivery carries ``X-FramePack-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is the
HMAC-SHA256, keyed with the webhook secret, of ``f"{t}."`` followed by the raw request body
(the scheme Stripe uses). A receiver checks it with :func:`verify_signature` or its own
equivalent. No API key or ``Authorization`` header is ever sent.

The HTTP call itself lives in :meth:`WebhookSender._post`, which a guarded sender (one that
refuses private addresses) overrides.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from ..errors import InputError
from ..media.fetch import FetchPolicy, post_json

__all__ = ["SIGNATURE_HEADER", "USER_AGENT", "WebhookSender", "signature_header", "verify_signature"]

SIGNATURE_HEADER = "X-FramePack-Signature"
USER_AGENT = "framepack-server"

log = logging.getLogger(__name__)


def _hmac_hex(secret: bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: bytes, body: bytes, timestamp: int) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body`` sent at ``timestamp``: ``t=<ts>,v1=<hex>``."""
    return f"t={int(timestamp)},v1={_hmac_hex(secret, body, int(timestamp))}"


def verify_signature(
    secret: bytes, body: bytes, header: str | None, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """Check a webhook's :data:`SIGNATURE_HEADER` on the receiving side.

    ``body`` must be the raw request body, byte for byte (not re-serialised JSON). ``header``
    is ``t=<unix seconds>,v1=<hex>``; several ``v1`` entries are allowed and any one matching
    suffices (as during a secret rotation). The delivery is refused when its timestamp is more
    than ``tolerance_s`` seconds away from ``now`` (default: the current time), which stops
    replays of old deliveries. Malformed headers return ``False``; this never raises.

    Example receiver::

        if not verify_signature(secret, await request.body(), request.headers.get(SIGNATURE_HEADER)):
            return Response(status_code=400)
    """
    if not isinstance(header, str):
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit() and len(value) <= 15):
                return False
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = _hmac_hex(secret, body, timestamp)
    return any(hmac.compare_digest(expected, c.encode("ascii", "replace").decode()) for c in candidates)


def _for_log(url: str) -> str:
    """The URL without its query string and fragment (they may hold the receiver's tokens)."""
    try:
        return urllib.parse.urlsplit(url)._replace(query="", fragment="").geturl()
    except ValueError:
        return "<invalid url>"


def _default_client(timeout_s: float) -> httpx.Client:
    # No redirects (a redirect could lead anywhere), no proxies or .netrc credentials from the environment.
    return httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)


class WebhookSender:
    """Delivers signed webhook payloads, retrying what may succeed later.

    Retried: connection errors, timeouts, ``429`` and ``5xx``, up to ``attempts`` tries in
    all, sleeping ``backoff_s * 2**n`` seconds after failed try ``n`` (0, 1, ...). Any other
    non-2xx answer (``3xx``, ``4xx``) ends delivery at once. Each try is signed afresh with the
    current time, so a late retry still passes a receiver's tolerance check.

    Thread-safe: the sender holds no mutable state and opens a client per delivery, made by
    ``client_factory`` (default: an :class:`httpx.Client` with ``timeout_s``, no redirects and
    no environment proxies or credentials).
    """

    def __init__(
        self,
        secret: bytes,
        *,
        attempts: int = 5,
        backoff_s: float = 1.0,
        timeout_s: float = 10.0,
        client_factory: Callable[[], httpx.Client] | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._secret = secret
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._client_factory = client_factory or (lambda: _default_client(timeout_s))

    def deliver(self, url: str, payload: dict[str, Any]) -> bool:
        """POST ``payload`` as compact JSON to ``url``; ``True`` once a try gets a 2xx answer."""
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        where = _for_log(url)
        for attempt in range(self.attempts):
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                SIGNATURE_HEADER: signature_header(self._secret, body, int(time.time())),
            }
            try:
                status = self._post(url, body, headers)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                log.warning("webhook to %s not sent: %s", where, exc)
                return False
            except httpx.TransportError as exc:
                log.info("webhook to %s, try %d/%d: %s", where, attempt + 1, self.attempts, exc or type(exc).__name__)
            else:
                if 200 <= status < 300:
                    return True
                if status != 429 and status < 500:
                    log.warning("webhook to %s refused with HTTP %d; not retrying", where, status)
                    return False
                log.info("webhook to %s, try %d/%d: HTTP %d", where, attempt + 1, self.attempts, status)
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff_s * 2**attempt)
        log.warning("webhook to %s failed after %d tries", where, self.attempts)
        return False

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """Send one POST and return its status code; transport failures raise :class:`httpx.TransportError`.

        The answer's body is never read: a receiver cannot make us download anything.
        """
        with self._client_factory() as client, client.stream("POST", url, content=body, headers=headers) as response:
            return response.status_code


class GuardedWebhookSender(WebhookSender):
    """A sender whose POST goes through the guarded fetcher: webhook URLs obey the same rule as image
    URLs (no private or reserved addresses unless the allow-list names them), checked at every try."""

    REFUSALS = ("refused", "not an http", "user names", "invalid", "could not resolve")

    def __init__(self, secret: bytes, policy: FetchPolicy, **kwargs: Any) -> None:
        super().__init__(secret, **kwargs)
        self.policy = replace(policy, connect_timeout=self.timeout_s, read_timeout=self.timeout_s)

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        try:
            return post_json(url, "webhook", self.policy, body, headers)
        except InputError as exc:  # translate to the transport errors `deliver` knows how to retry
            if exc.message.startswith(self.REFUSALS):
                raise httpx.InvalidURL(exc.message) from None
            raise httpx.TransportError(exc.message) from None
