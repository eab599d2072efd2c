"""The admin API under ``/admin``: deny by default, every route needs the master key."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response, StreamingResponse

from app import accounts
from app.accounts import AccountError, KeyCreate, KeyUpdate, TopUp
from app.alerts import list_deliveries
from app.errors import InvalidRequest, NotFound
from app.json import json_response, parse_request_json
from app.money.ledger import utcnow
from app.routes.deps import AdminDep, ServicesDep
from app.upstream_errors import list_upstream_errors
from app.usage import UsageFilter, list_policy_events, list_usage, usage_csv
from app.usage_summary import parse_query, summarize


async def _acknowledged_writes_visible(services: ServicesDep) -> None:
    """Money writes are acknowledged before their fsync; the operator must read what clients saw."""
    await services.ledger.flush()


router = APIRouter(prefix="/admin", dependencies=[AdminDep, Depends(_acknowledged_writes_visible)])

M = TypeVar("M", bound=BaseModel)
MAX_OFFSET = 2**31 - 1  # past any table's rows, and inside what SQLite and Postgres take (2**63 was a 500)


async def _body(request: Request, model: type[M]) -> M:
    data = parse_request_json(await request.body())
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"{where or 'body'}: {first['msg']}", param=where) from None


def _found(view: dict[str, Any] | None, key_id: str) -> dict[str, Any]:
    if view is None:
        raise NotFound(f"No key with id '{key_id}'.", param="id")
    return view


@router.post("/keys")
async def create_key(request: Request, services: ServicesDep) -> Response:
    spec = await _body(request, KeyCreate)
    try:
        created = await accounts.create_key(services.db, services.catalog, spec)
    except AccountError as exc:
        raise InvalidRequest(str(exc)) from None
    return json_response(created, status_code=201)


@router.get("/keys")
async def list_keys(
    services: ServicesDep, limit: int = Query(1000, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_OFFSET)
) -> Response:
    return json_response({"object": "list", "data": await accounts.list_keys(services.db, limit=limit, offset=offset)})


@router.get("/keys/{key_id}")
async def show_key(key_id: str, services: ServicesDep) -> Response:
    return json_response(_found(await accounts.get_key(services.db, key_id), key_id))


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, request: Request, services: ServicesDep) -> Response:
    spec = await _body(request, KeyUpdate)
    _found(await accounts.get_key(services.db, key_id), key_id)
    try:
        view = await accounts.update_key(services.db, services.catalog, services.keys, key_id, spec)
    except AccountError as exc:
        raise InvalidRequest(str(exc)) from None
    return json_response(_found(view, key_id))


@router.post("/keys/{key_id}/topup")
async def topup_key(key_id: str, request: Request, services: ServicesDep) -> Response:
    spec = await _body(request, TopUp)
    try:
        view = await accounts.topup_key(services.db, services.ledger, key_id, spec)
    except AccountError as exc:
        raise InvalidRequest(str(exc)) from None
    return json_response(_found(view, key_id))


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, services: ServicesDep) -> Response:
    _found(await accounts.get_key(services.db, key_id), key_id)
    await services.keys.revoke(key_id)
    return json_response(_found(await accounts.get_key(services.db, key_id), key_id))


@router.get("/usage")
async def usage(
    services: ServicesDep,
    key_id: str | None = None,
    limit: int = Query(1000, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> Response:
    rows = await list_usage(services.db, key_id=key_id, limit=limit, offset=offset)
    return json_response({"object": "list", "data": rows})


@router.get("/usage.csv")
async def usage_export(
    services: ServicesDep,
    key_id: str | None = None,
    model: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """The selection as CSV, streamed page by page (``app.usage.usage_csv``)."""
    try:
        where = UsageFilter.parse({"key_id": key_id, "model": model, "status": status, "since": since, "until": until})
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return StreamingResponse(
        usage_csv(services.db, where),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="seedgate-usage.csv"'},
    )


@router.get("/alerts")
async def alert_deliveries(services: ServicesDep, key_id: str | None = None) -> Response:
    """Low-balance webhook deliveries, newest first, with their state."""
    return json_response({"object": "list", "data": await list_deliveries(services.db, key_id=key_id)})


@router.get("/usage/summary")
async def usage_summary(
    services: ServicesDep,
    since: str | None = Query(None, alias="from"),
    until: str | None = Query(None, alias="to"),
    group_by: str = "day",
    key_id: str | None = None,
    model: str | None = None,
    limit: int = 1000,
) -> Response:
    """Totals by day, key and/or model over ``from``..``to`` (UTC days, default the last 30), from the rollups."""
    today = utcnow().date()
    try:
        spec = parse_query(
            since=since, until=until, group_by=group_by, key_id=key_id, model=model, limit=limit, today=today
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return json_response(await summarize(services.db, spec, days=services.usage_days, today=today))


@router.get("/policy-events")
async def policy_events(
    services: ServicesDep, key_id: str | None = None, limit: int = Query(100, ge=1, le=1000)
) -> Response:
    return json_response({"object": "list", "data": await list_policy_events(services.db, key_id=key_id, limit=limit)})


@router.get("/ledger")
async def ledger_totals(services: ServicesDep) -> Response:
    """Totals behind the ledger invariant ``topups == available + held + charges`` (exact units of 1e-12 USD)."""
    totals = await accounts.ledger_totals(services.db)
    totals["balanced"] = totals["topups"] == totals["available"] + totals["held"] + totals["charges"]
    return json_response(totals)


@router.get("/upstreams")
async def upstreams(services: ServicesDep) -> Response:
    """Per target: circuit state, recent error rate and latency (targets appear after their first request)."""
    configured = [
        {"model": model.id, "target": t.key, "weight": t.weight, "priority": t.priority}
        for model in services.catalog.models
        for t in model.targets
    ]
    return json_response({"targets": configured, "health": services.router.snapshot()})


@router.get("/upstream-errors")
async def upstream_error_log(
    services: ServicesDep, request_id: str | None = None, limit: int = Query(100, ge=1, le=1000)
) -> Response:
    """What upstreams said when they refused requests, newest first (clients saw only the gateway's digest)."""
    rows = await list_upstream_errors(services.db, request_id=request_id, limit=limit)
    return json_response({"object": "list", "data": rows})


@router.get("/openapi.json")
async def openapi_schema(request: Request) -> Response:
    """The OpenAPI schema (not served publicly outside demo mode: it lists every admin route)."""
    return json_response(request.app.openapi())
