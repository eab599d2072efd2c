"""The operator's record of upstream refusals: ``upstream_errors`` rows, newest kept, oldest trimmed.

Rules owned here: one row per request that ended on an upstream HTTP error, with the request id the
client was given, so an operator can match a client's complaint to the upstream's own words. The
text is ``app.upstream_messages.operator_text`` (the gateway's secrets already scrubbed). After each
insert, rows older than the newest ``keep`` are deleted, so the table never grows without bound;
``keep = 0`` records nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert

from app.db import Database
from app.tables import upstream_errors
from app.usage import newest_rows


async def record_upstream_error(
    db: Database,
    *,
    request_id: str,
    key_id: str | None,
    model: str | None,
    upstream: str | None,
    status: int | None,
    code: str | None,
    message: str | None,
    keep: int,
) -> None:
    if keep <= 0:
        return
    async with db.write() as conn:
        result = await conn.execute(
            insert(upstream_errors).values(
                request_id=request_id,
                key_id=key_id,
                model=(model or "")[:200] or None,
                upstream=(upstream or "")[:200] or None,
                status=status,
                code=(code or "")[:100] or None,
                message=message,
                created_at=datetime.now(UTC),
            )
        )
        newest = result.inserted_primary_key[0] if result.inserted_primary_key else None
        if newest is not None:
            await conn.execute(delete(upstream_errors).where(upstream_errors.c.id <= newest - keep))


async def list_upstream_errors(
    db: Database, *, request_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    where = None if request_id is None else upstream_errors.c.request_id == request_id
    return await newest_rows(db, upstream_errors, where=where, limit=limit)
