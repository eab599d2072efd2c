"""Key-holder self-service: ``GET /v1/key`` and the OpenAI-legacy billing routes (rules: ``app.selfservice``)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from starlette.responses import Response

from app import selfservice
from app.errors import InvalidRequest
from app.json import json_response
from app.keys import KeyRecord, authenticate
from app.limits.checks import check_ip
from app.routes.deps import InboundDep, ServicesDep

router = APIRouter()


async def _caller(services: ServicesDep, inbound: InboundDep) -> KeyRecord:
    await check_ip(services.limiter, services.settings.limits, inbound.client_ip)
    key = await authenticate(services.keys, inbound.api_key)
    inbound.record.key_id = key.id
    await services.ledger.flush()  # the holder reads what their own requests were acknowledged with
    return key


@router.get("/v1/key")
async def own_key(services: ServicesDep, inbound: InboundDep) -> Response:
    key = await _caller(services, inbound)
    return json_response(await selfservice.key_summary(services.db, key.id, services.settings.limits.key_defaults))


@router.get("/dashboard/billing/subscription")
@router.get("/v1/dashboard/billing/subscription")
async def billing_subscription(services: ServicesDep, inbound: InboundDep) -> Response:
    key = await _caller(services, inbound)
    return json_response(await selfservice.billing_subscription(services.db, key.id))


@router.get("/dashboard/billing/usage")
@router.get("/v1/dashboard/billing/usage")
async def billing_usage(
    services: ServicesDep, inbound: InboundDep, start_date: str | None = None, end_date: str | None = None
) -> Response:
    key = await _caller(services, inbound)
    try:
        start, end = selfservice.usage_range(start_date, end_date, datetime.now(UTC).date())
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="start_date") from None
    return json_response(await selfservice.billing_usage(services.db, key.id, start, end))
