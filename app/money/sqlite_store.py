"""The hot money operations as plain SQL for the SQLite writer thread (``app.money.writer``).

These are the same conditional statements as the portable SQLAlchemy versions in ``app.money.ledger``
(which serve Postgres and are the reference): reserve = one guarded UPDATE + the hold row; settle =
the ``held -> settled`` flip, then release + charge + ledger row + usage row; release = the
``held -> released`` flip + give back. Timestamps are written in SQLAlchemy's SQLite format so both
paths read each other's rows.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.money.ledger import Hold, UsageRecord

_RESERVE = """
UPDATE api_keys
   SET available = available - :amount,
       held = held + :amount,
       quota_spent = CASE WHEN quota_month = :month THEN quota_spent ELSE 0 END,
       quota_month = :month
 WHERE id = :key_id
   AND available >= :amount
   AND (monthly_quota IS NULL
        OR (CASE WHEN quota_month = :month THEN quota_spent ELSE 0 END) + held + :amount <= monthly_quota)
"""
_INSERT_HOLD = """
INSERT INTO holds (request_id, key_id, model, amount, prompt_tokens_estimate, prompt_cost_estimate,
                   owner, status, created_at, expires_at)
VALUES (:request_id, :key_id, :model, :amount, :prompt_tokens_estimate, :prompt_cost_estimate,
        :owner, 'held', :now, :expires_at)
"""
_FLIP = "UPDATE holds SET status = :status WHERE request_id = :request_id AND status = 'held'"
_GIVE_BACK = "UPDATE api_keys SET available = available + :amount, held = held - :amount WHERE id = :key_id"
_CHARGE = """
UPDATE api_keys
   SET available = available + :amount - :charged,
       held = held - :amount,
       spent = spent + :charged,
       quota_spent = CASE WHEN quota_month = :month THEN quota_spent + :charged ELSE :charged END,
       quota_month = :month
 WHERE id = :key_id
"""
_LEDGER = """
INSERT INTO ledger (key_id, kind, amount, request_id, created_at)
VALUES (:key_id, 'charge', :charged, :request_id, :now)
"""
_USAGE = """
INSERT INTO usage (request_id, key_id, model, upstream, upstream_model, endpoint, stream, prompt_tokens,
                   completion_tokens, reasoning_tokens, cached_tokens, cost, shortfall, status, partial,
                   estimated, source, latency_ms, created_at)
VALUES (:request_id, :key_id, :model, :upstream, :upstream_model, :endpoint, :stream, :prompt_tokens,
        :completion_tokens, :reasoning_tokens, :cached_tokens, :charged, :shortfall, :status, :partial,
        :estimated, :source, :latency_ms, :now)
"""

Op = Callable[[sqlite3.Connection], Any]


_second: tuple[int, str] = (-1, "")


def stamp(epoch: float) -> str:
    """``timestamp`` of a Unix time, formatting the date and time only once per second (hot path)."""
    global _second
    whole = int(epoch)
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%d %H:%M:%S"))
    return f"{_second[1]}.{min(round((epoch - whole) * 1_000_000), 999_999):06d}"


def reserve(params: dict[str, Any]) -> Op:
    """Returns ``None`` when reserved, else the key's ``available`` (``-1`` if the key is gone)."""

    def op(conn: sqlite3.Connection) -> int | None:
        if conn.execute(_RESERVE, params).rowcount == 1:
            conn.execute(_INSERT_HOLD, params)
            return None
        row = conn.execute("SELECT available FROM api_keys WHERE id = ?", (params["key_id"],)).fetchone()
        return int(row[0]) if row is not None else -1

    return op


def release(request_id: str, key_id: str, amount: int) -> Op:
    def op(conn: sqlite3.Connection) -> bool:
        if conn.execute(_FLIP, {"status": "released", "request_id": request_id}).rowcount != 1:
            return False
        conn.execute(_GIVE_BACK, {"amount": amount, "key_id": key_id})
        return True

    return op


def settle(params: dict[str, Any]) -> Op:
    """``params`` holds the usage row fields plus ``amount`` (the hold) and ``cost``.

    Returns ``(charged, shortfall)``, or ``None`` when the hold was already settled or released.
    """

    def op(conn: sqlite3.Connection) -> tuple[int, int] | None:
        if conn.execute(_FLIP, {"status": "settled", "request_id": params["request_id"]}).rowcount != 1:
            return None
        (available,) = conn.execute("SELECT available FROM api_keys WHERE id = ?", (params["key_id"],)).fetchone()
        charged = max(0, min(params["cost"], available + params["amount"]))
        values = {**params, "charged": charged, "shortfall": params["cost"] - charged}
        conn.execute(_CHARGE, values)
        conn.execute(_LEDGER, values)
        conn.execute(_USAGE, values)
        return charged, params["cost"] - charged

    return op


def reserve_params(hold: Hold, *, owner: str, hold_ttl: float) -> dict[str, Any]:
    epoch = time.time()
    now = stamp(epoch)
    return {
        "key_id": hold.key_id,
        "request_id": hold.request_id,
        "model": hold.model,
        "amount": hold.amount,
        "prompt_tokens_estimate": hold.prompt_tokens_estimate,
        "prompt_cost_estimate": hold.prompt_cost_estimate,
        "owner": owner,
        "month": now[:7],
        "now": now,
        "expires_at": stamp(epoch + hold_ttl),
    }


def settle_params(hold: Hold, record: UsageRecord, *, source: str) -> dict[str, Any]:
    now = stamp(time.time())
    return {
        "request_id": hold.request_id,
        "key_id": hold.key_id,
        "amount": hold.amount,
        "cost": record.cost,
        "month": now[:7],
        "now": now,
        "source": source,
        "model": record.model,
        "upstream": record.upstream,
        "upstream_model": record.upstream_model,
        "endpoint": record.endpoint,
        "stream": record.stream,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "cached_tokens": record.cached_tokens,
        "status": record.status,
        "partial": record.partial,
        "estimated": record.estimated,
        "latency_ms": record.latency_ms,
    }
