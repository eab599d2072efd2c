"""Building holds and usage rows for the ledger contract tests."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update

from app.db import Database
from app.money.ledger import Ledger
from app.money.records import Hold, UsageRow
from app.money.units import UNITS_PER_USD

USD = UNITS_PER_USD


def make_hold(key_id: str, amount: int, *, estimate: int = 0, output_price: int = 0) -> Hold:
    return Hold(
        request_id="req_" + uuid.uuid4().hex,
        key_id=key_id,
        model="doubao-seed-2.0-pro",
        amount=amount,
        prompt_tokens_estimate=100,
        prompt_cost_estimate=estimate,
        output_price=output_price,
    )


def draft(hold: Hold, cost: int, **fields: Any) -> UsageRow:
    row = UsageRow(
        request_id=hold.request_id,
        key_id=hold.key_id,
        model=hold.model,
        upstream="ark",
        upstream_model="doubao-seed-2-0-pro-260215",
        endpoint="chat.completions",
        stream=False,
        prompt_tokens=100,
        completion_tokens=20,
        reasoning_tokens=5,
        cached_tokens=10,
        cost=cost,
        shortfall=0,
        status="ok",
        partial=False,
        estimated=False,
        source="request",
        latency_ms=12,
        created_at=datetime.now(UTC),
    )
    return replace(row, **fields)


async def reserve(ledger: Ledger, key_id: str, amount: int, **fields: Any) -> Hold:
    hold = make_hold(key_id, amount, **fields)
    refusal = await ledger.reserve(hold)
    assert refusal is None, refusal
    return hold


async def set_columns(db: Database, table: Any, where: Any, **values: Any) -> None:
    async with db.write() as conn:
        await conn.execute(update(table).where(where).values(**values))
