"""The ledger: every money operation of the gateway, the same contract on every database.

A request's money, start to end (``app.pipeline`` drives it; ``app.money.transactions`` has the SQL):

1. ``reserve`` the quote's worst case, or learn why not (``Refusal``: balance, quota, key gone).
2. While the request runs, ``Leases`` renews the hold's lease and checkpoints its progress.
3. ``settle`` with the usage row, or ``release`` when nothing was consumed -- exactly once. Both are
   retried with back-off until they are durable: a settlement is never dropped because the
   database was locked or away for a while.
4. ``recover`` settles holds whose lease lapsed (their process died or stopped renewing), from their
   last checkpoint. A request that settles after that posts the difference as a late adjustment.

On SQLite files the request operations are acknowledged after their group's WAL commit
(``database.sqlite_durability: group``) or after the fsync that covers it (``fsync``); ``flush``
waits until everything acknowledged so far is on disk (admin reads use it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from app.db import Database
from app.money import transactions as tx
from app.money.drivers import Driver, SqlDriver, TxFactory, WriterDriver
from app.money.records import Checkpoint, Hold, Refusal, Settlement, UsageRow

log = logging.getLogger("seedgate.money")

T = TypeVar("T")
RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 5.0
RECOVERY_BATCH = 500
CHECKPOINT_BATCH = 500


class TopUpRefused(Exception):
    """A top-up past a per-key maximum: ``reason`` is ``balance`` or ``lifetime``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def utcnow() -> datetime:
    return datetime.now(UTC)


class Ledger:
    def __init__(
        self,
        db: Database,
        *,
        owner: str,
        lease_seconds: float,
        durable_requests: bool = False,
        driver: Driver | None = None,
    ) -> None:
        # SQLite files go through the group-commit writer; ``driver`` picks another path (tests)
        self._driver: Driver = driver or (WriterDriver(db.writer) if db.writer is not None else SqlDriver(db))
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self._durable = durable_requests

    async def flush(self) -> None:
        """Wait until every money write acknowledged so far is on disk (before reading it back)."""
        await self._driver.flush()

    async def topup(self, key_id: str, amount: int, *, note: str | None = None) -> None:
        """Add ``amount`` to the key's balance; ``KeyError`` if there is no such key, ``TopUpRefused`` if it
        would pass a per-key maximum (``app.money.units``)."""
        refusal = await self._driver.run(lambda: tx.topup(key_id, amount, note, utcnow()))
        if refusal == "missing":
            raise KeyError(key_id)
        if refusal is not None:
            raise TopUpRefused(refusal)

    async def reserve(self, hold: Hold) -> Refusal | None:
        """Reserve ``hold.amount``; None when reserved, else why not."""
        now = utcnow()
        return await self._driver.run(
            lambda: tx.reserve(hold, owner=self.owner, now=now, lease_until=now + self.lease), durable=self._durable
        )

    async def release(self, hold: Hold) -> bool:
        """Give the hold back (nothing was consumed); False if it had already ended."""
        return await self._until_durable("release", hold.request_id, lambda: tx.release(hold, utcnow()))

    async def settle(self, hold: Hold, draft: UsageRow) -> Settlement | None:
        """Charge ``draft.cost`` against the hold; None if it had already been settled or released."""
        settlement = await self._until_durable("settlement", hold.request_id, lambda: tx.settle(hold, draft))
        if settlement is not None and settlement.shortfall:
            log.warning("request %s cost %d units more than the key had", hold.request_id, settlement.shortfall)
        if settlement is not None and settlement.late:
            log.warning(
                "request %s settled after recovery: adjustment of %d units", hold.request_id, settlement.charged
            )
        return settlement

    async def checkpoint(self, marks: list[Checkpoint]) -> None:
        for start in range(0, len(marks), CHECKPOINT_BATCH):
            batch = marks[start : start + CHECKPOINT_BATCH]
            await self._driver.run(lambda batch=batch: tx.checkpoint(batch), durable=False)  # type: ignore[misc]

    async def recover(self, *, charged: Callable[[str], None] | None = None) -> int:
        """Settle every hold whose lease lapsed, from its last checkpoint. Returns how many were recovered;
        ``charged(key_id)`` is called for each one that cost its key something (low-balance alerts)."""
        now = utcnow()
        recovered = 0
        for hold, sent, output_tokens in await self._driver.run(lambda: tx.lapsed(now, RECOVERY_BATCH)):
            cost = await self._driver.run(
                lambda h=hold, s=sent, o=output_tokens: tx.recover(h, sent=s, output_tokens=o, now=now)  # type: ignore[misc]
            )
            if cost is not None:
                recovered += 1
                log.warning("recovered hold %s of key %s: charged %d units", hold.request_id, hold.key_id, cost)
                if cost and charged is not None:
                    charged(hold.key_id)
        return recovered

    async def _until_durable(self, what: str, request_id: str, make: TxFactory[T]) -> T:
        delay = RETRY_FIRST_SECONDS
        failures = 0
        while True:
            try:
                return await self._driver.run(make, durable=self._durable)
            except Exception:
                failures += 1
                log.warning(
                    "%s of %s failed (attempt %d); retrying in %.2f s", what, request_id, failures, delay, exc_info=True
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
