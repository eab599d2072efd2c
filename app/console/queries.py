"""The console's own reads: the overview's figures (24 hours by hour from usage rows, final hours read
once per process by ``FinalHours``; 30 days by day, errors included, from the ``usage_daily``
rollups), holds outstanding, and key search.

"Errors" are requests that reached billing and did not end ``ok`` (upstream errors, timeouts,
disconnects); refusals before billing (401, 402, 429) have no usage row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, case, cast, func, or_, select

from app.accounts import VIEW_COLUMNS, key_view
from app.db import Database
from app.money.sums import exact_sum, joined
from app.selfservice import usage_by_day
from app.tables import api_keys, holds, usage, usage_daily


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


HOUR = timedelta(hours=1)
# An hour is final once it ended this long ago: a request's usage row carries the time it was settled,
# so rows of an hour keep landing only while its last settlements are written (retried if need be).
FINAL_AFTER = timedelta(minutes=10)
Hourly = tuple[int, int, int, int]  # requests, errors, tokens, cost
_NO_USAGE: Hourly = (0, 0, 0, 0)


def _label(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d %H")


def _hours(start: datetime, end: datetime) -> list[datetime]:
    count = max(0, int((end - start) / HOUR))
    return [start + i * HOUR for i in range(count)]


class FinalHours:
    """The overview's figures of final hours, read from raw usage rows once per process.

    With millions of rows a day, the 24-hour chart would scan every row of the day on each view; this
    way a view reads only the rows since the last final hour (at most ~70 minutes of traffic). A late
    settlement that rewrites a row of a final hour (after recovery) shows in the 30-day chart and the
    usage summaries, which read the rollups, not here.
    """

    def __init__(self) -> None:
        self._hours: dict[str, Hourly] = {}

    async def between(self, db: Database, start: datetime, end: datetime) -> dict[str, Hourly]:
        """Hour label -> figures for every hour in ``[start, end)``; ``end`` must be final."""
        wanted = _hours(start, end)
        missing = [hour for hour in wanted if _label(hour) not in self._hours]
        if missing:
            found = await _hourly(db, missing[0], end)
            for hour in _hours(missing[0], end):
                self._hours[_label(hour)] = found.get(_label(hour), _NO_USAGE)
        first = _label(start)
        self._hours = {label: row for label, row in self._hours.items() if label >= first}
        return {_label(hour): self._hours[_label(hour)] for hour in wanted}


async def _hourly(
    db: Database, since: datetime, until: datetime | None, key_id: str | None = None
) -> dict[str, Hourly]:
    bucket = _bucket(db, 13)
    failed = cast(func.sum(case((usage.c.status != "ok", 1), else_=0)), Integer)
    query = select(
        bucket,
        func.count(),
        failed,
        func.sum(usage.c.prompt_tokens + usage.c.completion_tokens),
        func.sum(usage.c.cost),
    ).where(usage.c.created_at >= since)
    if until is not None:
        query = query.where(usage.c.created_at < until)
    if key_id is not None:
        query = query.where(usage.c.key_id == key_id)
    async with db.read() as conn:
        rows = (await conn.execute(query.group_by(bucket))).all()
    return {r[0]: (int(r[1] or 0), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0)) for r in rows}


async def last_24_hours(
    db: Database, now: datetime, key_id: str | None = None, *, final: FinalHours | None = None
) -> Series:
    """Per hour, the last 24 (the current one included). ``final``: the process's cache of final
    hours (every key's figures only)."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    found: dict[str, Hourly] = {}
    live_from = start
    if final is not None and key_id is None:
        live_from = max(start, (now - FINAL_AFTER).replace(minute=0, second=0, microsecond=0))
        found.update(await final.between(db, start, live_from))
    found.update(await _hourly(db, live_from, None, key_id))
    series = Series([], [], [], [], [])
    for hour in _hours(start, start + 24 * HOUR):
        requests, errors, tokens, cost = found.get(_label(hour), _NO_USAGE)
        series.labels.append(hour.strftime("%H:00"))
        series.requests.append(requests)
        series.errors.append(errors)
        series.tokens.append(tokens)
        series.cost.append(cost)
    return series


async def last_30_days(db: Database, today: date, key_id: str | None = None) -> Series:
    days = await usage_by_day(db, key_id, 30, today)
    return Series(
        labels=[d[0][5:] for d in days],
        requests=[d[1] for d in days],
        errors=[d[2] for d in days],
        tokens=[d[3] for d in days],
        cost=[d[4] for d in days],
    )


async def holds_outstanding(db: Database) -> tuple[int, int]:
    """(count, amount in units) of the holds still held, across every instance."""
    query = select(func.count(), *exact_sum(holds.c.amount)).where(holds.c.status == "held")  # every key's: exact
    async with db.read() as conn:
        count, high, low = (await conn.execute(query)).one()
    return int(count), joined(high, low)


async def key_count(db: Database) -> int:
    """How many keys exist (revoked and expired included), counted by the database."""
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(api_keys))).scalar_one())


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
