"""Usage totals over a date range, read from the daily rollups (``usage_daily``), never from raw rows.

The rollups are written in the same transaction as each usage row (``app.money.transactions``) and
outlive raw-row retention, so a summary costs the same with ten million raw rows as with ten. Days
are UTC dates, both ends of the range included. Rows are grouped by any of ``day``, ``key``,
``model`` (none: one total); filters by key and model narrow them (indexes of migration 0006).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select

from app.db import Database
from app.money.units import units_to_usd
from app.tables import usage_daily

GROUPS = {"day": usage_daily.c.day, "key": usage_daily.c.key_id, "model": usage_daily.c.model}
_LABELS = {"day": "day", "key": "key_id", "model": "model"}
_SUMS = ("requests", "partial", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "cost")


@dataclass(frozen=True, slots=True)
class SummaryQuery:
    since: date
    until: date
    group_by: tuple[str, ...] = ("day",)
    key_id: str | None = None
    model: str | None = None
    limit: int = 1000


def _filtered(query: Select[Any], spec: SummaryQuery) -> Select[Any]:
    query = query.where(usage_daily.c.day >= spec.since.isoformat(), usage_daily.c.day <= spec.until.isoformat())
    if spec.key_id is not None:
        query = query.where(usage_daily.c.key_id == spec.key_id)
    if spec.model is not None:
        query = query.where(usage_daily.c.model == spec.model)
    return query


def _figures(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {name: int(values[name] or 0) for name in _SUMS if name != "cost"}
    out["cost_usd"] = units_to_usd(int(values["cost"] or 0))
    return out


async def summarize(db: Database, spec: SummaryQuery) -> dict[str, Any]:
    sums: list[ColumnElement[Any]] = [func.sum(getattr(usage_daily.c, name)).label(name) for name in _SUMS]
    groups = [GROUPS[name].label(_LABELS[name]) for name in spec.group_by]
    totals_query = _filtered(select(*sums), spec)
    rows_query = None
    if groups:
        keys = [GROUPS[name] for name in spec.group_by]
        rows_query = _filtered(select(*groups, *sums), spec).group_by(*keys).order_by(*keys).limit(spec.limit)
    async with db.read() as conn:
        totals = (await conn.execute(totals_query)).mappings().one()
        rows = (await conn.execute(rows_query)).mappings().all() if rows_query is not None else []
    data = [{**{_LABELS[g]: row[_LABELS[g]] for g in spec.group_by}, **_figures(dict(row))} for row in rows]
    return {
        "object": "usage.summary",
        "from": spec.since.isoformat(),
        "to": spec.until.isoformat(),
        "group_by": list(spec.group_by),
        "key_id": spec.key_id,
        "model": spec.model,
        "totals": _figures(dict(totals)),
        "data": data,
        "truncated": len(data) == spec.limit,
    }


MAX_LIMIT = 10_000
DEFAULT_DAYS = 30


def parse_query(
    *,
    since: str | None,
    until: str | None,
    group_by: str,
    key_id: str | None,
    model: str | None,
    limit: int,
    today: date,
) -> SummaryQuery:
    """The query string of ``GET /admin/usage/summary``; ``ValueError`` says what is wrong."""
    end = _day(until, "to") if until else today
    start = _day(since, "from") if since else date.fromordinal(end.toordinal() - DEFAULT_DAYS + 1)
    if start > end:
        raise ValueError("'from' must not be after 'to'")
    groups = tuple(part.strip() for part in group_by.split(",") if part.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or len(set(groups)) != len(groups):
        raise ValueError(f"group_by takes distinct values among {', '.join(GROUPS)} (got {group_by!r})")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    return SummaryQuery(start, end, groups, key_id or None, model or None, limit)


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'{name}' must be a date as YYYY-MM-DD") from None
