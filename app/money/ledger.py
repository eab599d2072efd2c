"""Prepaid balances: reserve, then settle exactly once.

Lifecycle of a request's money (every path ends in ``settle`` or ``release``):

1. ``reserve`` moves the worst-case cost from ``available`` to ``held`` with ONE conditional UPDATE
   (``available >= hold`` and, with a monthly quota, ``month_spent + held + hold <= quota``) and
   inserts a ``holds`` row, in one short transaction. No row changed -> 402, or 429 for the quota.
2. ``settle`` flips the hold ``held -> settled`` with a conditional UPDATE; only the caller that flips
   it continues, so a hold is settled once however often settle runs. It releases the hold, charges
   ``min(cost, available + hold)`` (a cost above the hold is charged down to zero and the rest recorded
   as ``shortfall``), writes one ``charge`` ledger row and one usage row (unique ``request_id``).
3. ``release`` flips ``held -> released`` and gives the hold back: nothing was consumed.
4. ``recover`` settles holds whose owner process stopped heart-beating or that are past expiry,
   charging their prompt estimate (``source=recovery``) through the same conditional flip, so running
   it twice changes nothing.

Invariant (tested on every backend): ``sum(topups) == available + held + sum(charges)``, ``available >= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import Database
from app.errors import AuthenticationFailed, InsufficientBalance, MonthlyQuotaExceeded
from app.money import sqlite_store as fast
from app.money.units import units_to_usd
from app.money.writer import SqliteWriter
from app.tables import api_keys, holds, instances, ledger, usage


@dataclass(frozen=True, slots=True)
class Hold:
    request_id: str
    key_id: str
    model: str
    amount: int
    prompt_tokens_estimate: int
    prompt_cost_estimate: int


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What a request consumed, as it will be written in the usage table."""

    model: str
    upstream: str | None
    upstream_model: str | None
    endpoint: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    cost: int
    status: str
    partial: bool = False
    estimated: bool = False
    latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    charged: int
    shortfall: int


def current_month(now: datetime) -> str:
    return now.strftime("%Y-%m")


def _month_spent(month: str) -> object:
    """SQL expression: this month's spend, reading a stale month as zero."""
    return case((api_keys.c.quota_month == month, api_keys.c.quota_spent), else_=0)


def _refusal(amount: int, available: int | None) -> Exception:
    """Why a reservation failed: the key is gone (401), money (402) or the monthly quota (429)."""
    if available is None:
        return AuthenticationFailed("Invalid API key.")
    if available < amount:
        return InsufficientBalance(
            f"Insufficient balance: this request may cost up to ${units_to_usd(amount)} "
            f"and the key has ${units_to_usd(available)} available. Top up or lower max_tokens.",
            fallback_suggestion="top up the balance or lower max_tokens",
        )
    return MonthlyQuotaExceeded()


class Ledger:
    """Money operations. On SQLite, reserve/settle/release go through the group-commit writer thread
    (``app.money.sqlite_store``, same SQL); everywhere else, and for the rare operations, SQLAlchemy."""

    def __init__(self, db: Database, *, owner: str, hold_ttl: float, writer: SqliteWriter | None = None) -> None:
        self._db = db
        self.owner = owner
        self._hold_ttl = timedelta(seconds=hold_ttl)
        self._writer = writer

    async def flush(self) -> None:
        """Wait until every money write acknowledged so far is on disk (before reading it back)."""
        if self._writer is not None:
            await self._writer.barrier()

    async def topup(self, key_id: str, amount: int, *, note: str | None = None) -> None:
        now = datetime.now(UTC)
        async with self._db.write() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id)
                .values(
                    available=api_keys.c.available + amount,
                    topped_up=api_keys.c.topped_up + amount,
                    updated_at=now,
                )
            )
            if result.rowcount == 0:
                raise KeyError(key_id)
            await conn.execute(
                insert(ledger).values(key_id=key_id, kind="topup", amount=amount, note=note, created_at=now)
            )

    async def reserve(
        self,
        *,
        key_id: str,
        request_id: str,
        model: str,
        amount: int,
        prompt_tokens_estimate: int,
        prompt_cost_estimate: int,
    ) -> Hold:
        hold = Hold(request_id, key_id, model, amount, prompt_tokens_estimate, prompt_cost_estimate)
        if self._writer is not None:
            params = fast.reserve_params(hold, owner=self.owner, hold_ttl=self._hold_ttl.total_seconds())
            available = await self._writer.run(fast.reserve(params), durable=False)
            if available is None:
                return hold
            raise _refusal(amount, None if available < 0 else available)
        now = datetime.now(UTC)
        month = current_month(now)
        month_spent = _month_spent(month)
        async with self._db.write() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.available >= amount,
                    or_(
                        api_keys.c.monthly_quota.is_(None),
                        month_spent + api_keys.c.held + amount <= api_keys.c.monthly_quota,
                    ),
                )
                .values(
                    available=api_keys.c.available - amount,
                    held=api_keys.c.held + amount,
                    quota_spent=month_spent,
                    quota_month=month,
                )
            )
            if result.rowcount == 1:
                await conn.execute(
                    insert(holds).values(
                        request_id=request_id,
                        key_id=key_id,
                        model=model,
                        amount=amount,
                        prompt_tokens_estimate=prompt_tokens_estimate,
                        prompt_cost_estimate=prompt_cost_estimate,
                        owner=self.owner,
                        status="held",
                        created_at=now,
                        expires_at=now + self._hold_ttl,
                    )
                )
                return hold
            row = (await conn.execute(select(api_keys.c.available).where(api_keys.c.id == key_id))).first()
        raise _refusal(amount, row.available if row is not None else None)

    async def release(self, hold: Hold) -> bool:
        if self._writer is not None:
            return await self._writer.run(fast.release(hold.request_id, hold.key_id, hold.amount), durable=False)
        async with self._db.write() as conn:
            flipped = await self._flip(conn, hold.request_id, "released")
            if flipped:
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == hold.key_id)
                    .values(available=api_keys.c.available + hold.amount, held=api_keys.c.held - hold.amount)
                )
        return flipped

    async def settle(self, hold: Hold, record: UsageRecord, *, source: str = "request") -> Settlement | None:
        """Charge ``record.cost`` against ``hold``; None if the hold was already settled or released."""
        if self._writer is not None:
            params = fast.settle_params(hold, record, source=source)
            outcome = await self._writer.run(fast.settle(params), durable=False)
            return Settlement(*outcome) if outcome is not None else None
        now = datetime.now(UTC)
        month = current_month(now)
        async with self._db.write() as conn:
            if not await self._flip(conn, hold.request_id, "settled"):
                return None
            row = (
                await conn.execute(select(api_keys.c.available).where(api_keys.c.id == hold.key_id).with_for_update())
            ).one()
            charged = max(0, min(record.cost, row.available + hold.amount))
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == hold.key_id)
                .values(
                    available=api_keys.c.available + hold.amount - charged,
                    held=api_keys.c.held - hold.amount,
                    spent=api_keys.c.spent + charged,
                    quota_spent=case(
                        (api_keys.c.quota_month == month, api_keys.c.quota_spent + charged), else_=charged
                    ),
                    quota_month=month,
                )
            )
            await conn.execute(
                insert(ledger).values(
                    key_id=hold.key_id, kind="charge", amount=charged, request_id=hold.request_id, created_at=now
                )
            )
            await conn.execute(
                insert(usage).values(
                    request_id=hold.request_id,
                    key_id=hold.key_id,
                    model=record.model,
                    upstream=record.upstream,
                    upstream_model=record.upstream_model,
                    endpoint=record.endpoint,
                    stream=record.stream,
                    prompt_tokens=record.prompt_tokens,
                    completion_tokens=record.completion_tokens,
                    reasoning_tokens=record.reasoning_tokens,
                    cached_tokens=record.cached_tokens,
                    cost=charged,
                    shortfall=record.cost - charged,
                    status=record.status,
                    partial=record.partial,
                    estimated=record.estimated,
                    source=source,
                    latency_ms=record.latency_ms,
                    created_at=now,
                )
            )
        return Settlement(charged=charged, shortfall=record.cost - charged)

    @staticmethod
    async def _flip(conn: AsyncConnection, request_id: str, status: str) -> bool:
        result = await conn.execute(
            update(holds).where(holds.c.request_id == request_id, holds.c.status == "held").values(status=status)
        )
        return result.rowcount == 1

    async def heartbeat(self) -> None:
        now = datetime.now(UTC)
        async with self._db.write() as conn:
            result = await conn.execute(update(instances).where(instances.c.id == self.owner).values(heartbeat_at=now))
            if result.rowcount == 0:
                await conn.execute(insert(instances).values(id=self.owner, started_at=now, heartbeat_at=now))

    async def recover(self, *, dead_after: float) -> int:
        """Settle holds left behind by dead processes or past expiry. Returns how many were settled."""
        await self.flush()  # holds acknowledged but not yet committed must be seen too
        now = datetime.now(UTC)
        alive_since = now - timedelta(seconds=dead_after)
        live_owners = select(instances.c.id).where(instances.c.heartbeat_at >= alive_since)
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(holds).where(
                        holds.c.status == "held",
                        or_(
                            holds.c.expires_at < now,
                            and_(holds.c.owner != self.owner, holds.c.owner.not_in(live_owners)),
                        ),
                    )
                )
            ).all()
        settled = 0
        for row in rows:
            hold = Hold(
                row.request_id, row.key_id, row.model, row.amount, row.prompt_tokens_estimate, row.prompt_cost_estimate
            )
            record = UsageRecord(
                model=row.model,
                upstream=None,
                upstream_model=None,
                endpoint="unknown",
                stream=False,
                prompt_tokens=row.prompt_tokens_estimate,
                completion_tokens=0,
                reasoning_tokens=0,
                cached_tokens=0,
                cost=row.prompt_cost_estimate,
                status="recovered",
                partial=True,
                estimated=True,
            )
            if await self.settle(hold, record, source="recovery") is not None:
                settled += 1
        return settled
