"""The console's reads on every database: the 24-hour chart (final hours are read from raw rows once per
process, the hours since on every view, and the figures equal a full read of the raw rows) and the key count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from app import accounts
from app.accounts import KeyCreate
from app.catalog import Catalog
from app.console.queries import FINAL_AFTER, FinalHours, key_count, last_24_hours
from app.db import Database
from app.tables import api_keys, usage

NOW = datetime(2026, 12, 7, 15, 30, tzinfo=UTC)
_serial = iter(range(1_000_000))


def _row(key_id: str, created: datetime, *, status: str = "ok", cost: int = 5) -> dict[str, Any]:
    return {
        "request_id": f"r-{next(_serial)}", "key_id": key_id, "model": "m", "upstream": None,
        "upstream_model": None, "endpoint": "chat.completions", "stream": False, "prompt_tokens": 3,
        "completion_tokens": 4, "reasoning_tokens": 0, "cached_tokens": 0, "cost": cost, "shortfall": 0,
        "status": status, "partial": False, "estimated": False, "source": "request", "latency_ms": 1,
        "created_at": created,
    }  # fmt: skip


async def _add(db: Database, rows: list[dict[str, Any]]) -> None:
    async with db.write() as conn:
        await conn.execute(insert(usage), rows)


async def _key(db: Database, catalog: Catalog) -> str:
    return str((await accounts.create_key(db, catalog, KeyCreate(name="h", balance_usd=1)))["id"])


async def test_cached_final_hours_give_the_same_chart_as_the_raw_rows(db: Database, catalog: Catalog) -> None:
    key_id = await _key(db, catalog)
    rows = [_row(key_id, NOW - timedelta(minutes=37 * n)) for n in range(40)]  # every hour of the day, some twice
    rows += [_row(key_id, NOW - timedelta(hours=5), status="upstream_error", cost=0)]
    rows += [_row(key_id, NOW - timedelta(hours=30))]  # before the chart
    await _add(db, rows)

    cached = await last_24_hours(db, NOW, final=FinalHours())
    raw = await last_24_hours(db, NOW)

    assert cached == raw
    assert cached.labels[0] == "16:00"
    assert cached.labels[-1] == "15:00"
    assert sum(cached.requests) == 40  # 40 * 37 min < 24 h; the row 30 hours ago is not on the chart
    assert sum(cached.errors) == 1
    assert sum(cached.tokens) == 7 * 40
    assert sum(cached.cost) == 5 * 39


async def test_final_hours_are_read_once_and_later_hours_on_every_view(db: Database, catalog: Catalog) -> None:
    key_id = await _key(db, catalog)
    final = FinalHours()
    first = await last_24_hours(db, NOW, final=final)
    assert sum(first.requests) == 0

    late_in_a_final_hour = NOW - timedelta(hours=3)
    in_the_live_window = NOW - FINAL_AFTER + timedelta(minutes=1)
    await _add(db, [_row(key_id, late_in_a_final_hour), _row(key_id, in_the_live_window), _row(key_id, NOW)])

    again = await last_24_hours(db, NOW, final=final)
    assert sum(again.requests) == 2, "a final hour was read again, or a live one was not"
    assert again.requests[-1] == 2

    an_hour_later = await last_24_hours(db, NOW + timedelta(hours=1), final=final)
    assert an_hour_later.requests[-2] == 2  # 15:00 has become final and was read once more, completely
    assert sum(an_hour_later.requests) == 2


async def test_one_keys_chart_reads_that_keys_rows(db: Database, catalog: Catalog) -> None:
    mine, other = await _key(db, catalog), await _key(db, catalog)
    await _add(db, [_row(mine, NOW - timedelta(hours=2)), _row(other, NOW - timedelta(hours=2))])

    series = await last_24_hours(db, NOW, mine, final=FinalHours())

    assert sum(series.requests) == 1


async def test_the_overview_counts_every_key_past_the_first_page(db: Database, catalog: Catalog) -> None:
    await _key(db, catalog)
    rows = [
        {"id": f"key-{n}", "name": "bulk", "key_hash": f"{n:064x}", "key_prefix": "sk-", "key_last4": "abcd",
         "created_at": NOW, "updated_at": NOW}
        for n in range(1_200)
    ]  # fmt: skip
    async with db.write() as conn:
        await conn.execute(insert(api_keys), rows)
    assert await key_count(db) == 1_201
    assert len(await accounts.list_keys(db)) == 1_000  # the list is paged; the count is not
