"""Raw usage retention on every database (SQLite; Postgres on the postgres pass): old rows go in
batches, recent rows and every rollup stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from app import accounts
from app.accounts import KeyCreate
from app.catalog import Catalog
from app.db import Database
from app.retention import Pass, UsageRetention
from app.tables import usage, usage_daily


def _row(key_id: str, n: int, created: datetime) -> dict[str, Any]:
    return {
        "request_id": f"r-{n}", "key_id": key_id, "model": "m", "upstream": None, "upstream_model": None,
        "endpoint": "chat.completions", "stream": False, "prompt_tokens": 1, "completion_tokens": 1,
        "reasoning_tokens": 0, "cached_tokens": 0, "cost": 5, "shortfall": 0, "status": "ok", "partial": False,
        "estimated": False, "source": "request", "latency_ms": 1, "created_at": created,
    }  # fmt: skip


async def test_old_raw_rows_are_deleted_in_batches_and_recent_rows_and_rollups_kept(
    db: Database, catalog: Catalog
) -> None:
    key_id = str((await accounts.create_key(db, catalog, KeyCreate(name="r", balance_usd=1)))["id"])
    now = datetime.now(UTC)
    old = [_row(key_id, n, now - timedelta(days=40, minutes=n)) for n in range(25)]
    recent = [_row(key_id, 100 + n, now - timedelta(days=29)) for n in range(3)]
    rollup = {"day": "2020-01-01", "key_id": key_id, "model": "m", "requests": 28, "partial": 0}
    rollup |= {"prompt_tokens": 28, "completion_tokens": 28, "reasoning_tokens": 0, "cached_tokens": 0, "cost": 140}
    async with db.write() as conn:
        await conn.execute(insert(usage), old + recent)
        await conn.execute(insert(usage_daily), [rollup])

    done = await UsageRetention(db, days=30, batch_rows=10, pause_seconds=0).prune(now)

    assert done == Pass(25, 3)
    async with db.read() as conn:
        kept = sorted((await conn.execute(select(usage.c.request_id))).scalars())
        rollups = (await conn.execute(select(func.count()).select_from(usage_daily))).scalar_one()
    assert kept == ["r-100", "r-101", "r-102"]
    assert rollups == 1
