"""Reading usage rows (filtered, paged, or streamed as CSV), and recording content-policy events.

A ``UsageFilter`` is the one selection the admin API, the console's usage explorer and the CLI share:
the CSV export of a selection is exactly the rows the explorer pages through. The export walks the
table by id in pages of ``EXPORT_PAGE`` rows, one short read transaction each, so neither memory nor
a database snapshot grows with the size of the export.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, insert, select

from app.db import Database
from app.money.units import units_to_usd
from app.tables import policy_events, usage

MAX_PAGE = 1000
EXPORT_PAGE = 1000
CSV_COLUMNS = (
    "created_at",
    "request_id",
    "key_id",
    "model",
    "upstream",
    "upstream_model",
    "endpoint",
    "stream",
    "status",
    "partial",
    "estimated",
    "source",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cost_usd",
    "shortfall_usd",
    "latency_ms",
)


@dataclass(frozen=True)
class UsageFilter:
    """A selection of usage rows; ``until`` is inclusive of its whole day (dates are UTC)."""

    key_id: str | None = None
    model: str | None = None
    status: str | None = None
    since: date | None = None
    until: date | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.key_id:
            query = query.where(usage.c.key_id == self.key_id)
        if self.model:
            query = query.where(usage.c.model == self.model)
        if self.status:
            query = query.where(usage.c.status == self.status)
        if self.since:
            query = query.where(usage.c.created_at >= datetime.combine(self.since, time(), UTC))
        if self.until and self.until < date.max:  # until 9999-12-31: no bound (and no day after it to compute)
            query = query.where(usage.c.created_at < datetime.combine(self.until + timedelta(days=1), time(), UTC))
        return query

    @classmethod
    def parse(cls, params: dict[str, str | None]) -> UsageFilter:
        """From query parameters (``key_id``, ``model``, ``status``, ``since``, ``until``); ValueError if bad."""

        def day(name: str) -> date | None:
            raw = (params.get(name) or "").strip()
            if not raw:
                return None
            try:
                return date.fromisoformat(raw)
            except ValueError:
                raise ValueError(f"{name}: expected a date as YYYY-MM-DD, got {raw[:40]!r}") from None

        def text(name: str) -> str | None:
            value = (params.get(name) or "").strip()
            if len(value) > 200:
                raise ValueError(f"{name}: too long")
            if any(ord(c) < 32 or c == "\x7f" for c in value):  # Postgres refuses NUL in a text parameter
                raise ValueError(f"{name}: must not contain control characters")
            return value or None

        return cls(text("key_id"), text("model"), text("status"), day("since"), day("until"))


async def list_usage(
    db: Database,
    *,
    key_id: str | None = None,
    limit: int,
    offset: int = 0,
    where: UsageFilter | None = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    selection = where or UsageFilter(key_id=key_id)
    order = usage.c.id.desc() if newest_first else usage.c.id
    query = selection.apply(select(usage)).order_by(order).limit(min(limit, MAX_PAGE)).offset(offset)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [usage_view(row) for row in rows]


async def iter_usage(db: Database, where: UsageFilter, *, page: int = EXPORT_PAGE) -> AsyncIterator[dict[str, Any]]:
    """Every row of the selection, oldest first, one page (one short read) at a time."""
    after = 0
    while True:  # bounded: ids only grow, each page moves ``after`` forward or ends the loop
        query = where.apply(select(usage)).where(usage.c.id > after).order_by(usage.c.id).limit(page)
        async with db.read() as conn:
            rows = (await conn.execute(query)).all()
        for row in rows:
            yield usage_view(row)
        if len(rows) < page:
            return
        after = rows[-1].id


async def usage_csv(db: Database, where: UsageFilter) -> AsyncIterator[bytes]:
    """The selection as CSV: a header line, then one line per row, streamed a page at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    async for row in iter_usage(db, where):
        writer.writerow([_csv_cell(row[column]) for column in CSV_COLUMNS])
        count += 1
        if count % 200 == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def _csv_cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value  # a spreadsheet must not run a formula from a model name
    return "" if value is None else value


def usage_view(row: Any) -> dict[str, Any]:
    return {
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
    return await newest_rows(
        db, policy_events, where=None if key_id is None else policy_events.c.key_id == key_id, limit=limit
    )


async def newest_rows(
    db: Database, table: Table, *, where: ColumnElement[bool] | None, limit: int
) -> list[dict[str, Any]]:
    """An audit table's newest rows (by ``id``), at most ``MAX_PAGE``, every column, times in ISO 8601."""
    query = select(table).order_by(table.c.id.desc()).limit(min(limit, MAX_PAGE))
    if where is not None:
        query = query.where(where)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    names = [str(name) for name in table.c.keys()]  # plain str: the JSON encoder refuses SQL name types
    return [{**dict(zip(names, row, strict=True)), "created_at": row.created_at.isoformat()} for row in rows]
