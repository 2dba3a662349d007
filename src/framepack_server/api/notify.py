"""Webhook delivery: a thread that sends each finished job's result to its ``?webhook=`` URL.

The job row records whether the webhook is owed, so a restart resumes deliveries that were cut off.
With several API replicas on one PostgreSQL, only the replica holding the dispatcher's leader lock
delivers (so no webhook is sent twice); when it dies, another takes over.
The body is WaveSpeed's webhook body (the prediction object itself, not wrapped), signed with our
HMAC header (see `webhooks.signature_header`).
"""

from __future__ import annotations

import logging
import threading

from ..jobs.db import LeaderLock
from .services import Services
from .views import prediction
from .webhooks import WebhookSender

log = logging.getLogger(__name__)
WEBHOOK_LEADER_LOCK = 0x6670_7765_6268  # PostgreSQL advisory lock key of the one delivering replica


class WebhookDispatcher(threading.Thread):
    def __init__(self, services: Services, base: str, sender: WebhookSender, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="webhooks")
        self.services, self.base, self.sender, self.interval = services, base, sender, interval
        self.stop_event = threading.Event()
        self.leader = LeaderLock(services.db, WEBHOOK_LEADER_LOCK)

    def deliver_pending(self) -> int:
        jobs = self.services.jobs.pending_webhooks()
        for job in jobs:
            payload = prediction(self.services, self.base, job).model_dump(exclude={"progress", "code"})
            delivered = self.sender.deliver(job.webhook, payload)
            self.services.jobs.set_webhook_state(job.id, "delivered" if delivered else "failed")
            log.info("webhook for job %s: %s", job.id, "delivered" if delivered else "gave up")
        return len(jobs)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                if self.leader.held():
                    self.deliver_pending()
            except Exception:  # keep delivering after a database or network hiccup
                log.exception("webhook delivery failed")
