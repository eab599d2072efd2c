"""What each console page shows, assembled from the shared admin functions and ``queries``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app import accounts, alerts
from app.console import charts, queries
from app.console.render import units_usd
from app.selfservice import key_summary
from app.services import Services
from app.usage import UsageFilter, list_policy_events, list_usage

USAGE_PAGE = 50
STATUSES = ("ok", "upstream_error", "upstream_timeout", "incomplete", "client_disconnected", "failed", "recovered")


def _chart_set(series: queries.Series, *, every: int, span: str) -> dict[str, Any]:
    dollars = [c / 1e12 for c in series.cost]
    return {
        "requests": charts.bars(series.labels, series.requests, title=f"Requests, {span}", every=every),
        "errors": charts.bars(series.labels, series.errors, title=f"Errors, {span}", every=every, css="errors"),
        "tokens": charts.bars(series.labels, series.tokens, title=f"Tokens, {span}", every=every, css="tokens"),
        "spend": charts.bars(series.labels, dollars, title=f"Spend, {span}", unit="$", every=every, css="spend"),
        "totals": series.totals,
    }


async def overview(services: Services) -> dict[str, Any]:
    now = datetime.now(UTC)
    day = await queries.last_24_hours(services.db, now, final=services.usage_hours)
    month = await queries.last_30_days(services.db, now.date())
    totals = await accounts.ledger_totals(services.db)
    held_count, held_amount = await queries.holds_outstanding(services.db)
    return {
        "day": _chart_set(day, every=4, span="last 24 hours"),
        "month": _chart_set(month, every=5, span="last 30 days"),
        "ledger": {
            **{k: units_usd(v) for k, v in totals.items()},
            "balanced": totals["topups"] == totals["available"] + totals["held"] + totals["charges"],
        },
        "open_requests": services.lifecycle.inflight,
        "holds": {"count": held_count, "amount": units_usd(held_amount)},
        "keys": await queries.key_count(services.db),  # not the key list: that is paged at 1,000
    }


async def key_page(services: Services, key_id: str) -> dict[str, Any] | None:
    view = await accounts.get_key(services.db, key_id)
    if view is None:
        return None
    now = datetime.now(UTC)
    month = await queries.last_30_days(services.db, now.date(), key_id=key_id)
    return {
        "key": view,
        "summary": await key_summary(services.db, key_id, services.settings.limits.key_defaults),
        "charts": _chart_set(month, every=5, span="last 30 days"),
        "recent": await list_usage(services.db, key_id=key_id, limit=20, newest_first=True),
        "alert": await alerts.key_alert_state(services.db, key_id, services.settings.alerts),
        "alerts_on": services.settings.alerts.webhook_url is not None,
        "deliveries": await alerts.list_deliveries(services.db, key_id=key_id, limit=10),
        "models": [m.id for m in services.catalog.models],
    }


async def usage_page(services: Services, where: UsageFilter, page: int) -> dict[str, Any]:
    rows = await list_usage(services.db, limit=USAGE_PAGE + 1, offset=page * USAGE_PAGE, where=where, newest_first=True)
    return {
        "rows": rows[:USAGE_PAGE],
        "more": len(rows) > USAGE_PAGE,
        "page": page,
        "models": await queries.model_names(services.db),
        "statuses": STATUSES,
    }


async def upstreams_page(services: Services) -> dict[str, Any]:
    health = {h["target"]: h for h in services.router.snapshot()}
    targets = [
        {"model": model.id, "target": t.key, "weight": t.weight, "priority": t.priority, "health": health.get(t.key)}
        for model in services.catalog.models
        for t in model.targets
    ]
    return {"targets": targets, "events": await list_policy_events(services.db, key_id=None, limit=50)}


async def alerts_page(services: Services) -> dict[str, Any]:
    settings = services.settings.alerts
    return {
        "webhook": settings.webhook_url,
        "signed": bool(settings.webhook_secret.get_secret_value()),
        "default_threshold": settings.default_threshold_usd,
        "max_attempts": settings.max_attempts,
        "deliveries": await alerts.list_deliveries(services.db, limit=100),
    }


async def me_page(services: Services, key_id: str) -> dict[str, Any]:
    """What ``/me`` shows the holder of ``key_id`` (already authenticated with the key itself)."""
    month = await queries.last_30_days(services.db, datetime.now(UTC).date(), key_id=key_id)
    dollars = [c / 1e12 for c in month.cost]
    return {
        "summary": await key_summary(services.db, key_id, services.settings.limits.key_defaults),
        "chart": charts.bars(month.labels, dollars, title="Your spend, last 30 days", unit="$", every=5, css="spend"),
        "requests": sum(month.requests),
    }
