"""Usage totals over a date range, read from the daily rollups (``usage_daily``), never from raw rows.

The rollups are written in the same transaction as each usage row (``app.money.transactions``) and
outlive raw-row retention, so a summary costs the same with ten million raw rows as with ten. Days
are UTC dates, both ends of the range included. Rows are grouped by any of ``day``, ``key``,
``model`` (none: one total); filters by key and model narrow them (indexes of migration 0006).

A rollup has one row per key, model and day, so a summary over every key still reads keys x models
x days rows. Summaries that neither filter nor group by key are served from ``DayTotals``: per day
and model, kept in memory for days that can no longer change -- every day before yesterday (UTC).
A day's rollups change only while its requests settle: a settlement after recovery follows within
the request's total timeout, and recovery rows are dated when written, so two days is ample margin.
Yesterday and today are always read from the database.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import date, timedelta
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


Sums = tuple[int, ...]  # in the order of _SUMS
FROZEN_AFTER_DAYS = 2  # a day is final once this many days have begun after it
ONE_DAY = timedelta(days=1)


class DayTotals:
    """Totals per day and model of final days, read from ``usage_daily`` once per day.

    The days read form one contiguous span, widened on demand; only days with usage are kept.
    """

    def __init__(self) -> None:
        self._days: dict[str, dict[str, Sums]] = {}
        self._span: tuple[date, date] | None = None
        self._lock = asyncio.Lock()

    async def between(self, db: Database, since: date, until: date) -> dict[str, dict[str, Sums]]:
        """Final days only (the caller keeps ``until`` before yesterday): day -> model -> sums."""
        async with self._lock:
            missing = [(since, until)]
            if self._span is not None:
                low, high = self._span
                missing = [(since, low - ONE_DAY), (high + ONE_DAY, until)]
                since, until = min(since, low), max(until, high)
            for first, last in missing:
                if first <= last:
                    self._days.update(await _per_day_and_model(db, first.isoformat(), last.isoformat(), model=None))
            self._span = (since, until)
        return self._days


async def _per_day_and_model(db: Database, first: str, last: str, *, model: str | None) -> dict[str, dict[str, Sums]]:
    sums = [func.sum(getattr(usage_daily.c, name)) for name in _SUMS]
    query = (
        select(usage_daily.c.day, usage_daily.c.model, *sums)
        .where(usage_daily.c.day >= first, usage_daily.c.day <= last)
        .group_by(usage_daily.c.day, usage_daily.c.model)
    )
    if model is not None:
        query = query.where(usage_daily.c.model == model)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    found: dict[str, dict[str, Sums]] = {}
    for day, name, *values in rows:
        found.setdefault(day, {})[name] = tuple(int(v or 0) for v in values)
    return found


async def _from_day_totals(db: Database, spec: SummaryQuery, days: DayTotals, today: date) -> dict[str, Any]:
    final = today - timedelta(days=FROZEN_AFTER_DAYS)
    per_day: dict[str, dict[str, Sums]] = {}
    if spec.since <= final:
        first, last = spec.since.isoformat(), min(spec.until, final).isoformat()
        known = await days.between(db, spec.since, min(spec.until, final))
        per_day.update((day, models) for day, models in known.items() if first <= day <= last)
    recent = max(spec.since, final + timedelta(days=1))
    if recent <= spec.until:
        per_day.update(await _per_day_and_model(db, recent.isoformat(), spec.until.isoformat(), model=spec.model))
    groups: dict[tuple[str, ...], list[int]] = {}
    total = [0] * len(_SUMS)
    for day, models in per_day.items():
        for name, values in models.items():
            if spec.model is not None and name != spec.model:
                continue
            labels = {"day": day, "model": name}
            bucket = groups.setdefault(tuple(labels[g] for g in spec.group_by), [0] * len(_SUMS))
            for i, value in enumerate(values):
                bucket[i] += value
                total[i] += value
    ordered = sorted(groups.items())[: spec.limit] if spec.group_by else []
    data = [
        {
            **{_LABELS[g]: label for g, label in zip(spec.group_by, labels, strict=True)},
            **_figures(dict(zip(_SUMS, v, strict=True))),
        }
        for labels, v in ordered
    ]
    return _answer(spec, _figures(dict(zip(_SUMS, total, strict=True))), data)


async def summarize(
    db: Database, spec: SummaryQuery, *, days: DayTotals | None = None, today: date | None = None
) -> dict[str, Any]:
    if days is not None and today is not None and spec.key_id is None:
        if "key" not in spec.group_by:
            return await _from_day_totals(db, spec, days, today)
        # grouped by key over every key: the totals come from the day totals, not a second scan of the rollups
        totals = (await _from_day_totals(db, replace(spec, group_by=()), days, today))["totals"]
        return _answer(spec, totals, await _grouped(db, spec))
    sums = [func.sum(getattr(usage_daily.c, name)).label(name) for name in _SUMS]
    async with db.read() as conn:
        totals = _figures(dict((await conn.execute(_filtered(select(*sums), spec))).mappings().one()))
    return _answer(spec, totals, await _grouped(db, spec))


async def _grouped(db: Database, spec: SummaryQuery) -> list[dict[str, Any]]:
    if not spec.group_by:
        return []
    sums: list[ColumnElement[Any]] = [func.sum(getattr(usage_daily.c, name)).label(name) for name in _SUMS]
    keys = [GROUPS[name] for name in spec.group_by]
    labelled = [GROUPS[name].label(_LABELS[name]) for name in spec.group_by]
    query = _filtered(select(*labelled, *sums), spec).group_by(*keys).order_by(*keys).limit(spec.limit)
    async with db.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [{**{_LABELS[g]: row[_LABELS[g]] for g in spec.group_by}, **_figures(dict(row))} for row in rows]


def _answer(spec: SummaryQuery, totals: dict[str, Any], data: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "usage.summary",
        "from": spec.since.isoformat(),
        "to": spec.until.isoformat(),
        "group_by": list(spec.group_by),
        "key_id": spec.key_id,
        "model": spec.model,
        "totals": totals,
        "data": data,
        "truncated": len(data) == spec.limit,
    }


MAX_LIMIT = 10_000
EARLIEST = date(1970, 1, 1)
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
    if start < EARLIEST:
        raise ValueError(f"'from' must be {EARLIEST.isoformat()} or later")
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
