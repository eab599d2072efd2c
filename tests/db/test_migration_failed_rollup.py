"""Migration 0007 on every database: the daily rollups learn how many requests failed, from the raw rows
still kept, and the partial index those rows were read through goes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, inspect, select

from app.db import Database
from app.migrate import upgrade
from app.tables import api_keys, usage, usage_daily
from tests.support.backends import database_url

DAY = datetime(2026, 12, 1, 10, tzinfo=UTC)


def _usage(n: int, status: str, model: str = "m") -> dict[str, Any]:
    return {
        "request_id": f"r-{n}", "key_id": "key_m", "model": model, "upstream": None, "upstream_model": None,
        "endpoint": "chat.completions", "stream": False, "prompt_tokens": 1, "completion_tokens": 1,
        "reasoning_tokens": 0, "cached_tokens": 0, "cost": 5, "shortfall": 0, "status": status, "partial": False,
        "estimated": False, "source": "request", "latency_ms": 1, "created_at": DAY,
    }  # fmt: skip


def _rollup(model: str, requests: int) -> dict[str, Any]:
    figures = {"requests": requests, "partial": 0, "prompt_tokens": requests, "completion_tokens": requests}
    return {"day": "2026-12-01", "key_id": "key_m", "model": model, **figures, "reasoning_tokens": 0,
            "cached_tokens": 0, "cost": 5 * requests}  # fmt: skip


async def _before_0007(url: str) -> None:
    db = Database(url)
    try:
        key = {"id": "key_m", "name": "m", "key_hash": "h" * 64, "key_prefix": "sk-", "key_last4": "abcd"}
        async with db.write() as conn:
            await conn.execute(insert(api_keys), [{**key, "created_at": DAY, "updated_at": DAY}])
            rows = [_usage(1, "ok"), _usage(2, "upstream_error"), _usage(3, "recovered"), _usage(4, "ok", "n")]
            await conn.execute(insert(usage), rows)
            # the columns named in the rows only: ``failed`` does not exist yet
            await conn.execute(insert(usage_daily), [_rollup("m", 3), _rollup("n", 1)])
    finally:
        await db.dispose()


async def _after(url: str) -> tuple[dict[str, int], list[str]]:
    db = Database(url)
    try:
        async with db.read() as conn:
            failed = {r[0]: r[1] for r in (await conn.execute(select(usage_daily.c.model, usage_daily.c.failed)))}
            indexes = await conn.run_sync(lambda sync: [i["name"] for i in inspect(sync).get_indexes("usage")])
    finally:
        await db.dispose()
    return failed, [name for name in indexes if name]


def test_the_rollups_count_the_failed_rows_still_kept_and_the_partial_index_goes(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    upgrade(url, "0006")
    asyncio.run(_before_0007(url))

    upgrade(url)

    failed, indexes = asyncio.run(_after(url))
    assert failed == {"m": 2, "n": 0}
    assert "ix_usage_failed_created_at" not in indexes
    assert "ix_usage_created_at" in indexes
