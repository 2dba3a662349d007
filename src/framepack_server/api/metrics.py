"""``GET /metrics``: Prometheus text format, behind an API key like every other route (scrape with
``authorization: {credentials: <key>}`` in Prometheus' job config). It reports the whole deployment
from the database (jobs by state, oldest wait, every worker's heartbeat and GPU memory), plus the
timings this process measured itself (an embedded worker's queue wait, job, section and step times).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from ..jobs.tables import utcnow
from ..metrics import DatabaseCollector
from .auth import require_key
from .services import Services

router = APIRouter()


def deployment_registry(services: Services) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        DatabaseCollector(services.jobs.counts, services.jobs.oldest_waiting, services.roster.list, utcnow)
    )
    return registry


@router.get("/metrics", summary="Prometheus metrics (jobs, queue, workers, timings)", include_in_schema=False)
def metrics(request: Request, _key: Annotated[str, Depends(require_key)]) -> Response:
    services: Services = request.app.state.services
    body = generate_latest(deployment_registry(services)) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
