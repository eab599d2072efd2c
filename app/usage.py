"""Reading usage rows, and recording content-policy events for the operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select

from app.db import Database
from app.money.units import units_to_usd
from app.tables import policy_events, usage

MAX_PAGE = 1000


async def list_usage(db: Database, *, key_id: str | None, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    query = select(usage).order_by(usage.c.id).limit(min(limit, MAX_PAGE)).offset(offset)
    if key_id is not None:
        query = query.where(usage.c.key_id == key_id)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "request_id": row.request_id,
            "key_id": row.key_id,
            "model": row.model,
            "upstream": row.upstream,
            "upstream_model": row.upstream_model,
            "endpoint": row.endpoint,
            "stream": row.stream,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "reasoning_tokens": row.reasoning_tokens,
            "cached_tokens": row.cached_tokens,
            "cost_usd": units_to_usd(row.cost),
            "shortfall_usd": units_to_usd(row.shortfall),
            "status": row.status,
            "partial": row.partial,
            "estimated": row.estimated,
            "source": row.source,
            "latency_ms": row.latency_ms,
            "created_at": row.created_at.isoformat(),
        }
        for row in rows
    ]


async def record_policy_event(
    db: Database, *, request_id: str, key_id: str, model: str, code: str | None, message: str | None
) -> None:
    async with db.write() as conn:
        await conn.execute(
            insert(policy_events).values(
                request_id=request_id,
                key_id=key_id,
                model=model,
                code=(code or "")[:100] or None,
                message=(message or "")[:1000] or None,
                created_at=datetime.now(UTC),
            )
        )


async def list_policy_events(db: Database, *, key_id: str | None, limit: int) -> list[dict[str, Any]]:
    query = select(policy_events).order_by(policy_events.c.id.desc()).limit(min(limit, MAX_PAGE))
    if key_id is not None:
        query = query.where(policy_events.c.key_id == key_id)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "id": row.id,
            "request_id": row.request_id,
            "key_id": row.key_id,
            "model": row.model,
            "code": row.code,
            "message": row.message,
            "created_at": row.created_at.isoformat(),
        }
        for row in rows
    ]
