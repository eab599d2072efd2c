"""What a key holder may see about their own key: ``GET /v1/key``, the OpenAI-legacy billing shapes, ``/me``.

Rules: the caller is authenticated with the key itself (``keys.authenticate``: a revoked or expired
key sees nothing); the answer never names other keys and never carries the key's hash. Money is in
USD strings on ``/v1/key`` (exact, as the admin API), and in OpenAI's legacy shapes on the billing
routes, which chat front-ends (ChatGPT-Next-Web, LobeChat) read as numbers:

- ``/dashboard/billing/subscription``: ``hard_limit_usd`` (and ``soft_limit_usd``,
  ``system_hard_limit_usd``) is everything ever topped up, so "used / total" adds up with
- ``/dashboard/billing/usage?start_date&end_date``: ``total_usage`` in US cents over ``[start, end)``
  (default: this calendar month), with OpenAI's ``daily_costs`` from the daily rollups.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from app.accounts import VIEW_COLUMNS, key_view
from app.db import Database
from app.money.transactions import month_of
from app.money.units import units_to_usd
from app.settings import KeyDefaults
from app.tables import api_keys, usage_daily

MAX_USAGE_DAYS = 100  # OpenAI refused longer ranges too
CENTS_PER_UNIT = 1e-10  # 1 unit = 1e-12 USD = 1e-10 cents


async def _key_row(db: Database, key_id: str) -> Any:
    async with db.read() as conn:
        return (await conn.execute(select(*VIEW_COLUMNS).where(api_keys.c.id == key_id))).one()


def _month_spent(row: Any, now: datetime) -> int:
    return int(row.quota_spent) if row.quota_month == month_of(now) else 0


async def key_summary(db: Database, key_id: str, defaults: KeyDefaults) -> dict[str, Any]:
    """The ``GET /v1/key`` body: balance, held, spend this month, quota, limits, models, expiry."""
    row = await _key_row(db, key_id)
    view = key_view(row)
    now = datetime.now(UTC)
    spent_month = _month_spent(row, now)
    quota = row.monthly_quota
    return {
        "object": "key",
        "id": view["id"],
        "name": view["name"],
        "key_hint": view["key_hint"],
        "balance_usd": view["balance_usd"],
        "held_usd": view["held_usd"],
        "spent_usd": view["spent_usd"],
        "topped_up_usd": view["topped_up_usd"],
        "spent_this_month_usd": units_to_usd(spent_month),
        "month": month_of(now),
        "monthly_quota_usd": view["monthly_quota_usd"],
        "monthly_quota_remaining_usd": units_to_usd(max(0, quota - spent_month)) if quota is not None else None,
        "limits": {
            "rpm": row.rpm or defaults.rpm,
            "tpm": row.tpm or defaults.tpm,
            "max_concurrent": row.max_concurrent or defaults.max_concurrent,
        },
        "models": view["models"],  # null: every model
        "expires_at": view["expires_at"],
        "created_at": view["created_at"],
    }


async def daily_costs(db: Database, key_id: str, start: date, end: date) -> list[tuple[str, str, int, int]]:
    """``(day, model, requests, cost units)`` per day in ``[start, end)`` from the rollups."""
    query = (
        select(usage_daily.c.day, usage_daily.c.model, usage_daily.c.requests, usage_daily.c.cost)
        .where(
            usage_daily.c.key_id == key_id, usage_daily.c.day >= start.isoformat(), usage_daily.c.day < end.isoformat()
        )
        .order_by(usage_daily.c.day, usage_daily.c.model)
    )
    async with db.read() as conn:
        return [(r.day, r.model, int(r.requests), int(r.cost)) for r in (await conn.execute(query)).all()]


async def billing_subscription(db: Database, key_id: str) -> dict[str, Any]:
    row = await _key_row(db, key_id)
    granted = float(units_to_usd(row.topped_up))
    return {
        "object": "billing_subscription",
        "has_payment_method": True,
        "canceled": row.revoked_at is not None,
        "canceled_at": int(row.revoked_at.timestamp()) if row.revoked_at else None,
        "delinquent": None,
        "access_until": int(row.expires_at.timestamp()) if row.expires_at else 0,
        "soft_limit": int(granted * 1_000_000),
        "hard_limit": int(granted * 1_000_000),
        "system_hard_limit": int(granted * 1_000_000),
        "soft_limit_usd": granted,
        "hard_limit_usd": granted,
        "system_hard_limit_usd": granted,
        "plan": {"title": "Prepaid", "id": "seedgate-prepaid"},
        "account_name": row.name,
        "po_number": None,
        "billing_email": None,
        "tax_ids": None,
        "billing_address": None,
        "business_address": None,
        # Seedgate's own, exact: what is left to spend
        "balance_usd": float(units_to_usd(row.available)),
    }


def usage_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """``[start, end)`` from ``start_date``/``end_date`` (YYYY-MM-DD); default this month. ValueError if bad."""
    try:
        first = date.fromisoformat(start) if start else today.replace(day=1)
        last = date.fromisoformat(end) if end else today + timedelta(days=1)
    except ValueError:
        raise ValueError("start_date and end_date must be dates as YYYY-MM-DD") from None
    if last <= first:
        raise ValueError("end_date must be after start_date")
    if (last - first).days > MAX_USAGE_DAYS:
        raise ValueError(f"the range must not exceed {MAX_USAGE_DAYS} days")
    return first, last


async def billing_usage(db: Database, key_id: str, start: date, end: date) -> dict[str, Any]:
    rows = await daily_costs(db, key_id, start, end)
    by_day: dict[str, list[dict[str, Any]]] = {}
    total = 0
    for day, model, _requests, cost in rows:
        by_day.setdefault(day, []).append({"name": model, "cost": cost * CENTS_PER_UNIT})
        total += cost
    daily = [
        {"timestamp": datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp(), "line_items": items}
        for day, items in sorted(by_day.items())
    ]
    return {"object": "list", "daily_costs": daily, "total_usage": total * CENTS_PER_UNIT}


async def usage_by_day(
    db: Database, key_id: str | None, days: int, today: date
) -> list[tuple[str, int, int, int, int]]:
    """``(day, requests, failed, tokens, cost units)`` for each of the last ``days`` days (zeros included)."""
    start = today - timedelta(days=days - 1)
    query = select(
        usage_daily.c.day,
        func.sum(usage_daily.c.requests),
        func.sum(usage_daily.c.failed),
        func.sum(usage_daily.c.prompt_tokens + usage_daily.c.completion_tokens),
        func.sum(usage_daily.c.cost),
    ).where(usage_daily.c.day >= start.isoformat())
    if key_id is not None:
        query = query.where(usage_daily.c.key_id == key_id)
    async with db.read() as conn:
        found = {
            r[0]: (int(r[1] or 0), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0))
            for r in (await conn.execute(query.group_by(usage_daily.c.day))).all()
        }
    out = []
    for offset in range(days):
        day = (start + timedelta(days=offset)).isoformat()
        out.append((day, *found.get(day, (0, 0, 0, 0))))
    return out
