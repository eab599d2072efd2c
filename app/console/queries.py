"""The console's own reads: the overview's figures (24 hours by hour from usage rows, 30 days by day
from the ``usage_daily`` rollups), holds outstanding, and key search.

"Errors" are requests that reached billing and did not end ``ok`` (upstream errors, timeouts,
disconnects); refusals before billing (401, 402, 429) have no usage row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, case, cast, func, or_, select

from app.accounts import VIEW_COLUMNS, key_view
from app.db import Database
from app.selfservice import usage_by_day
from app.tables import FAILED, api_keys, holds, usage, usage_daily


@dataclass
class Series:
    labels: list[str]
    requests: list[int]
    errors: list[int]
    tokens: list[int]
    cost: list[int]  # units of 1e-12 USD

    @property
    def totals(self) -> dict[str, int]:
        return {
            "requests": sum(self.requests),
            "errors": sum(self.errors),
            "tokens": sum(self.tokens),
            "cost": sum(self.cost),
        }


def _bucket(db: Database, width: int) -> Any:
    """The first ``width`` characters of the UTC timestamp: 13 -> 'YYYY-MM-DD HH', 10 -> the day."""
    if db.is_sqlite:
        return func.substr(usage.c.created_at, 1, width)
    pattern = "YYYY-MM-DD HH24" if width == 13 else "YYYY-MM-DD"
    return func.to_char(func.timezone("UTC", usage.c.created_at), pattern)


async def last_24_hours(db: Database, now: datetime, key_id: str | None = None) -> Series:
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    bucket = _bucket(db, 13)
    failed = cast(func.sum(case((usage.c.status != "ok", 1), else_=0)), Integer)
    query = select(
        bucket,
        func.count(),
        failed,
        func.sum(usage.c.prompt_tokens + usage.c.completion_tokens),
        func.sum(usage.c.cost),
    ).where(usage.c.created_at >= start)
    if key_id is not None:
        query = query.where(usage.c.key_id == key_id)
    async with db.read() as conn:
        found = {r[0]: r[1:] for r in (await conn.execute(query.group_by(bucket))).all()}
    series = Series([], [], [], [], [])
    for offset in range(24):
        hour = start + timedelta(hours=offset)
        row = found.get(hour.strftime("%Y-%m-%d %H"), (0, 0, 0, 0))
        series.labels.append(hour.strftime("%H:00"))
        series.requests.append(int(row[0] or 0))
        series.errors.append(int(row[1] or 0))
        series.tokens.append(int(row[2] or 0))
        series.cost.append(int(row[3] or 0))
    return series


async def last_30_days(db: Database, today: date, key_id: str | None = None) -> Series:
    days = await usage_by_day(db, key_id, 30, today)
    start = datetime.combine(today - timedelta(days=29), datetime.min.time(), UTC)
    bucket = _bucket(db, 10)
    # the partial index's own predicate, literally: a bound parameter would not match it
    query = select(bucket, func.count()).where(FAILED, usage.c.created_at >= start)
    if key_id is not None:
        query = query.where(usage.c.key_id == key_id)
    async with db.read() as conn:
        errors = {r[0]: int(r[1]) for r in (await conn.execute(query.group_by(bucket))).all()}
    return Series(
        labels=[d[0][5:] for d in days],
        requests=[d[1] for d in days],
        errors=[errors.get(d[0], 0) for d in days],
        tokens=[d[2] for d in days],
        cost=[d[3] for d in days],
    )


async def holds_outstanding(db: Database) -> tuple[int, int]:
    """(count, amount in units) of the holds still held, across every instance."""
    query = select(func.count(), func.coalesce(func.sum(holds.c.amount), 0)).where(holds.c.status == "held")
    async with db.read() as conn:
        count, amount = (await conn.execute(query)).one()
    return int(count), int(amount)


async def search_keys(db: Database, text: str | None, *, limit: int = 200) -> list[dict[str, Any]]:
    """Keys whose id, name or key prefix/last four contain ``text`` (all when empty), newest first."""
    query = select(*VIEW_COLUMNS).order_by(api_keys.c.created_at.desc()).limit(limit)
    if text:
        like = f"%{text.lower()}%"
        query = query.where(
            or_(
                func.lower(api_keys.c.id).like(like),
                func.lower(api_keys.c.name).like(like),
                func.lower(api_keys.c.key_prefix + "..." + api_keys.c.key_last4).like(like),
            )
        )
    async with db.read() as conn:
        return [key_view(r) for r in (await conn.execute(query)).all()]


async def model_names(db: Database) -> list[str]:
    async with db.read() as conn:
        query = select(usage_daily.c.model).distinct().order_by(usage_daily.c.model)  # rollups: small
        return [r[0] for r in (await conn.execute(query)).all()]
