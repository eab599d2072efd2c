"""``GET /metrics``: Prometheus exposition, for the scrapers ``metrics.token`` / ``metrics.allow`` admit."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.responses import Response

from app.errors import AuthenticationFailed, NotFound
from app.limits.checks import count_failed_guess, refuse_while_guessing
from app.metrics.exposition import CONTENT_TYPE, ScrapeAccess, exposition
from app.routes.deps import InboundDep, ServicesDep

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(inbound: InboundDep, services: ServicesDep) -> Response:
    settings = services.settings.metrics
    if not settings.enabled:
        raise NotFound("No route for GET /metrics.")
    limits, limiter = services.settings.limits, services.limiter
    await refuse_while_guessing(limiter, limits, inbound.client_ip, rejected=services.metrics.limit_rejected)
    token = settings.token.get_secret_value() if settings.token is not None else None
    try:
        ScrapeAccess(token, settings.allow).check(inbound.api_key, inbound.client_ip)
    except AuthenticationFailed:
        await count_failed_guess(limiter, limits, inbound.client_ip)  # a wrong token is a guess
        raise
    # several workers: reading their files is disk I/O, kept off the event loop
    body = await asyncio.to_thread(exposition, services.metrics)
    return Response(body, media_type=CONTENT_TYPE)
