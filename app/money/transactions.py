"""The money transactions, written once for every database.

Each transaction is a generator that yields ``Query`` objects and receives their results; a driver
(``app.money.drivers``) runs it inside one database transaction -- on the SQLite group-commit writer
thread, or on an SQLAlchemy connection (Postgres, in-memory SQLite). So the SQL and the order of its
statements exist once, and the contract tests exercise the same code on every backend.

Rules owned here (the arithmetic itself is in ``app.money.rules``):

- ``reserve``: ONE conditional UPDATE moves the hold from ``available`` to ``held`` only if the
  balance covers it and, with a monthly quota, ``month_spent + held + hold <= quota``; then the hold
  row. No row changed -> a ``Refusal`` saying why and how much room there is.
- Every end of a hold starts with a conditional flip of its status (``held -> settled | released |
  recovered``, ``recovered -> settled``): only the transaction that flips it goes on, so each end
  happens exactly once however often it is attempted.
- ``settle`` releases the hold, charges ``clamp_charge(cost, available + hold)``, writes a ``charge``
  ledger row and the usage row. If recovery got there first, the real figures replace the estimate:
  the difference is a ``late`` adjustment (charge or refund) and the usage row is rewritten.
- ``topup``: ONE conditional UPDATE adds the amount only if the balance stays within
  ``MAX_BALANCE_UNITS`` and the key's lifetime top-ups within ``MAX_TOPPED_UP_UNITS`` (concurrent
  top-ups cannot pass either together); then the ledger row.
- ``recover`` takes a hold whose lease lapsed (its process stopped renewing it: dead or stuck) and
  charges ``recovery_charge`` from its last checkpoint.

Ledger invariant, per key and in total: ``topups == available + held + charges + adjustments``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from app.money.records import USAGE_COLUMNS, Checkpoint, Hold, Refusal, Settlement, UsageRow
from app.money.rules import clamp_charge, recovery_charge
from app.money.units import MAX_BALANCE_UNITS, MAX_TOPPED_UP_UNITS

T = TypeVar("T")


class Query(NamedTuple):  # a tuple: built several times per request, on the writer's hot path
    sql: str
    params: dict[str, Any] | list[dict[str, Any]]
    rows: bool = False  # the result is the fetched rows, else the number of rows changed
    lock: bool = False  # a read that will be written back: SELECT ... FOR UPDATE where supported


Tx = Generator[Query, Any, T]

_MONTH_SPENT = "(CASE WHEN quota_month = :month THEN quota_spent ELSE 0 END)"
_RESERVE = f"""
UPDATE api_keys
   SET available = available - :amount, held = held + :amount, quota_spent = {_MONTH_SPENT}, quota_month = :month
 WHERE id = :key_id AND available >= :amount
   AND (monthly_quota IS NULL OR {_MONTH_SPENT} + held + :amount <= monthly_quota)"""
_INSERT_HOLD = """
INSERT INTO holds (request_id, key_id, model, amount, prompt_tokens_estimate, prompt_cost_estimate, output_price,
                   owner, status, sent, output_tokens, created_at, expires_at)
VALUES (:request_id, :key_id, :model, :amount, :prompt_tokens_estimate, :prompt_cost_estimate, :output_price,
        :owner, 'held', TRUE, 0, :now, :lease_until)"""  # sent: see app.money.leases
_ROOM = f"SELECT available, held, monthly_quota, {_MONTH_SPENT} FROM api_keys WHERE id = :key_id"
_FLIP = "UPDATE holds SET status = :to WHERE request_id = :request_id AND status = :from"
_GIVE_BACK = "UPDATE api_keys SET available = available + :amount, held = held - :amount WHERE id = :key_id"
_AVAILABLE = "SELECT available FROM api_keys WHERE id = :key_id"
_CHARGE = f"""
UPDATE api_keys
   SET available = available + :amount - :charged, held = held - :amount, spent = spent + :charged,
       quota_spent = CASE WHEN {_MONTH_SPENT} + :charged > 0 THEN {_MONTH_SPENT} + :charged ELSE 0 END,
       quota_month = :month
 WHERE id = :key_id"""  # a late refund in a later month than its charge does not take this month's spend below 0
_LEDGER = """
INSERT INTO ledger (key_id, kind, amount, request_id, note, created_at)
VALUES (:key_id, :kind, :amount, :request_id, :note, :now)"""
_TOPUP = """
UPDATE api_keys SET available = available + :amount, topped_up = topped_up + :amount, updated_at = :now
 WHERE id = :key_id AND available <= :max_available AND topped_up <= :max_topped_up"""
_INSERT_USAGE = f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES ({', '.join(':' + c for c in USAGE_COLUMNS)})"
_REWRITTEN = [c for c in USAGE_COLUMNS if c not in ("request_id", "key_id", "model", "created_at")]
_REWRITE_USAGE = f"UPDATE usage SET {', '.join(f'{c} = :{c}' for c in _REWRITTEN)} WHERE request_id = :request_id"
_TOKENS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
_ROLLUP_FIELDS = ("requests", "partial", "failed", *_TOKENS, "cost")
_ROLLUP = f"""
INSERT INTO usage_daily (day, key_id, model, {", ".join(_ROLLUP_FIELDS)})
VALUES (:day, :key_id, :model, {", ".join(":" + f for f in _ROLLUP_FIELDS)})
ON CONFLICT (day, key_id, model) DO UPDATE
   SET {", ".join(f"{f} = usage_daily.{f} + excluded.{f}" for f in _ROLLUP_FIELDS)}"""
_BEFORE = """
SELECT cost, partial, status, prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, created_at
  FROM usage WHERE request_id = :request_id"""
_CHECKPOINT = """
UPDATE holds SET sent = :sent, output_tokens = :output_tokens, expires_at = :lease_until
 WHERE request_id = :request_id AND status = 'held'"""
_LAPSED = """
SELECT request_id, key_id, model, amount, prompt_tokens_estimate, prompt_cost_estimate, output_price, sent,
       output_tokens
  FROM holds WHERE status = 'held' AND expires_at < :now ORDER BY expires_at LIMIT :limit"""


def month_of(now: datetime) -> str:
    return f"{now.year:04d}-{now.month:02d}"


def _flip(request_id: str, from_status: str, to_status: str) -> Query:
    return Query(_FLIP, {"request_id": request_id, "from": from_status, "to": to_status})


def topup(key_id: str, amount: int, note: str | None, now: datetime) -> Tx[str | None]:
    """None when added; else why not: ``missing`` (no such key), ``balance`` (it would pass
    ``MAX_BALANCE_UNITS``) or ``lifetime`` (its top-ups would pass ``MAX_TOPPED_UP_UNITS``)."""
    params = {
        "key_id": key_id,
        "amount": amount,
        "now": now,
        "max_available": MAX_BALANCE_UNITS - amount,  # the limits minus the amount: no sum in SQL can overflow
        "max_topped_up": MAX_TOPPED_UP_UNITS - amount,
    }
    if (yield Query(_TOPUP, params)) == 1:
        yield Query(
            _LEDGER, {"key_id": key_id, "kind": "topup", "amount": amount, "request_id": None, "note": note, "now": now}
        )
        return None
    rows = yield Query(_AVAILABLE, params, rows=True)
    if not rows:
        return "missing"
    return "balance" if rows[0][0] > params["max_available"] else "lifetime"


def reserve(hold: Hold, *, owner: str, now: datetime, lease_until: datetime) -> Tx[Refusal | None]:
    params = {
        "key_id": hold.key_id,
        "amount": hold.amount,
        "month": month_of(now),
        "request_id": hold.request_id,
        "model": hold.model,
        "prompt_tokens_estimate": hold.prompt_tokens_estimate,
        "prompt_cost_estimate": hold.prompt_cost_estimate,
        "output_price": hold.output_price,
        "owner": owner,
        "now": now,
        "lease_until": lease_until,
    }
    if (yield Query(_RESERVE, params)) == 1:
        yield Query(_INSERT_HOLD, params)
        return None
    rows = yield Query(_ROOM, params, rows=True)
    if not rows:
        return Refusal("key", 0, 0)
    available, held, quota, month_spent = rows[0]
    quota_room = None if quota is None else max(0, quota - month_spent - held)
    room = available if quota_room is None else min(available, quota_room)
    reason = "quota" if quota_room is not None and quota_room < hold.amount <= available else "balance"
    return Refusal(reason, available, room)


def release(hold: Hold, now: datetime) -> Tx[bool]:
    """Give the hold back; False when it had already ended. One that recovery charged while the request
    still ran is refunded what recovery charged (its usage row rewritten to cost nothing)."""
    if (yield _flip(hold.request_id, "held", "released")) == 1:
        yield Query(_GIVE_BACK, {"key_id": hold.key_id, "amount": hold.amount})
        return True
    if (yield _flip(hold.request_id, "recovered", "released")) != 1:
        return False
    yield from _settle_late(hold, _hold_row(hold, status="released", source="late", now=now))
    return True


def _post(key_id: str, request_id: str, kind: str, amount: int, note: str | None, now: datetime) -> Query:
    params = {"key_id": key_id, "kind": kind, "amount": amount, "request_id": request_id, "note": note, "now": now}
    return Query(_LEDGER, params)


def _charge(hold_amount: int, key_id: str, charged: int, now: datetime) -> Query:
    params = {"key_id": key_id, "amount": hold_amount, "charged": charged, "month": month_of(now)}
    return Query(_CHARGE, params)


def settle(hold: Hold, draft: UsageRow) -> Tx[Settlement | None]:
    """Charge ``draft.cost`` against the hold; None when it was already settled or released."""
    now = draft.created_at
    if (yield _flip(hold.request_id, "held", "settled")) == 1:
        [(available,)] = yield Query(_AVAILABLE, {"key_id": hold.key_id}, rows=True, lock=True)
        charged, shortfall = clamp_charge(draft.cost, available + hold.amount)
        yield _charge(hold.amount, hold.key_id, charged, now)
        yield _post(hold.key_id, hold.request_id, "charge", charged, None, now)
        yield from _record(draft, cost=charged, shortfall=shortfall)
        return Settlement(charged, shortfall)
    if (yield _flip(hold.request_id, "recovered", "settled")) != 1:
        return None
    return (yield from _settle_late(hold, draft))


def _settle_late(hold: Hold, draft: UsageRow) -> Tx[Settlement]:
    """Recovery charged an estimate while this request still ran: post the difference, keep the real row."""
    now = draft.created_at
    before = yield Query(_BEFORE, {"request_id": hold.request_id}, rows=True)
    charged_before = before[0][0] if before else 0
    difference = draft.cost - charged_before
    [(available,)] = yield Query(_AVAILABLE, {"key_id": hold.key_id}, rows=True, lock=True)
    extra, shortfall = clamp_charge(difference, available) if difference > 0 else (difference, 0)
    if extra:
        yield _charge(0, hold.key_id, extra, now)  # a negative extra is a refund
        yield _post(hold.key_id, hold.request_id, "adjustment", extra, "late settlement after recovery", now)
    row = replace(draft, cost=charged_before + extra, shortfall=shortfall, source="late")
    if not before:
        yield from _record(row)
        return Settlement(extra, shortfall, late=True)
    yield Query(_REWRITE_USAGE, _row_params(row))
    old_cost, old_partial, old_status, *old_tokens, created_at = before[0]
    delta = _rollup_values(_row_params(row))
    for name, old in zip(_TOKENS, old_tokens, strict=True):
        delta[name] -= old
    delta.update(
        requests=0,
        partial=int(row.partial) - int(bool(old_partial)),
        failed=int(row.status != "ok") - int(old_status != "ok"),
        cost=row.cost - old_cost,
    )
    yield Query(_ROLLUP, {**delta, "day": str(created_at)[:10], "key_id": row.key_id, "model": row.model})
    return Settlement(extra, shortfall, late=True)


def checkpoint(marks: list[Checkpoint]) -> Tx[int]:
    params = [
        {"request_id": m.request_id, "sent": m.sent, "output_tokens": m.output_tokens, "lease_until": m.lease_until}
        for m in marks
    ]
    changed: int = yield Query(_CHECKPOINT, params)
    return changed


def lapsed(now: datetime, limit: int) -> Tx[list[tuple[Hold, bool, int]]]:
    """Holds whose lease lapsed: ``(hold, sent, checkpointed output tokens)``."""
    rows = yield Query(_LAPSED, {"now": now, "limit": limit}, rows=True)
    return [(Hold(*row[:7]), bool(row[7]), int(row[8])) for row in rows]


def recover(hold: Hold, *, sent: bool, output_tokens: int, now: datetime) -> Tx[int | None]:
    """Settle one lapsed hold from its checkpoint; the charge, or None if it ended meanwhile."""
    if (yield _flip(hold.request_id, "held", "recovered")) != 1:
        return None
    cost = recovery_charge(
        sent=sent, prompt_cost=hold.prompt_cost_estimate, output_tokens=output_tokens, output_price=hold.output_price
    )
    if not sent and output_tokens == 0:  # it never reached the upstream: nothing to charge, no usage row
        yield Query(_GIVE_BACK, {"key_id": hold.key_id, "amount": hold.amount})
        return 0
    [(available,)] = yield Query(_AVAILABLE, {"key_id": hold.key_id}, rows=True, lock=True)
    charged, shortfall = clamp_charge(cost, available + hold.amount)
    yield _charge(hold.amount, hold.key_id, charged, now)
    yield _post(hold.key_id, hold.request_id, "charge", charged, "recovered", now)
    prompt_tokens = hold.prompt_tokens_estimate if sent else 0
    row = _hold_row(hold, prompt_tokens, output_tokens, status="recovered", source="recovery", now=now)
    yield from _record(row, cost=charged, shortfall=shortfall)  # a free model's too: its usage is not lost
    return charged


def _hold_row(
    hold: Hold, prompt_tokens: int = 0, output_tokens: int = 0, *, status: str, source: str, now: datetime
) -> UsageRow:
    """The usage row of a request known only from its hold (what it did was never reported): estimated."""
    return UsageRow(
        request_id=hold.request_id,
        key_id=hold.key_id,
        model=hold.model,
        upstream=None,
        upstream_model=None,
        endpoint="unknown",
        stream=False,
        prompt_tokens=prompt_tokens,
        completion_tokens=output_tokens,
        reasoning_tokens=0,
        cached_tokens=0,
        cost=0,
        shortfall=0,
        status=status,
        partial=True,
        estimated=True,
        source=source,
        latency_ms=None,
        created_at=now,
    )


def _rollup_values(row: dict[str, Any]) -> dict[str, int]:
    """One usage row's share of its day's rollup."""
    shares = {"requests": 1, "partial": int(row["partial"]), "failed": int(row["status"] != "ok")}
    return shares | {name: row[name] for name in (*_TOKENS, "cost")}


def _record(row: UsageRow, **changed: Any) -> Tx[None]:
    """The usage row (``row`` with the ``changed`` fields), and its share of the day's rollup."""
    params = _row_params(row)
    params.update(changed)
    yield Query(_INSERT_USAGE, params)
    day = row.created_at.astimezone(UTC).date().isoformat()
    yield Query(_ROLLUP, {**_rollup_values(params), "day": day, "key_id": row.key_id, "model": row.model})


def _row_params(row: UsageRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in USAGE_COLUMNS}
