"""Raw usage retention: rows older than ``billing.usage_retention_days`` are deleted, rollups never.

Rules:
- only ``usage`` rows go; ``usage_daily`` keeps every day's totals forever (summaries and charts
  read those), and the ledger is never touched;
- deletion runs in small batches (``BATCH_ROWS`` per transaction, a pause between them), on the same
  write path as the money code (SQLite: the group-commit writer thread, so a batch queues between
  request writes instead of holding the file lock; Postgres: one short transaction per batch);
- a pass runs in its own task, started by the background maintenance (``Services._maintain``) at
  most every ``PASS_INTERVAL_SECONDS``; it never runs on a request's path and never delays the
  maintenance's lease renewals. A pass is bounded (``MAX_BATCHES``); the next one continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.db import Database
from app.money.drivers import Driver, SqlDriver, WriterDriver
from app.money.transactions import Query, Tx

log = logging.getLogger("seedgate.retention")

BATCH_ROWS = 1000
PAUSE_SECONDS = 0.05
PASS_INTERVAL_SECONDS = 3600.0
FIRST_PASS_AFTER_SECONDS = 60.0
MAX_BATCHES = 10_000  # 10 million rows per pass at most

_DELETE_BATCH = """
DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE created_at < :cutoff ORDER BY created_at LIMIT :limit)"""


def delete_batch(cutoff: datetime, limit: int) -> Tx[int]:
    deleted: int = yield Query(_DELETE_BATCH, {"cutoff": cutoff, "limit": limit})
    return deleted


@dataclass(frozen=True, slots=True)
class Pass:
    rows: int
    batches: int


class UsageRetention:
    def __init__(
        self,
        db: Database,
        *,
        days: int,
        batch_rows: int = BATCH_ROWS,
        pause_seconds: float = PAUSE_SECONDS,
        interval_seconds: float = PASS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        driver: Driver | None = None,
    ) -> None:
        self.days = days
        self._driver: Driver = driver or (WriterDriver(db.writer) if db.writer is not None else SqlDriver(db))
        self._batch = batch_rows
        self._pause = pause_seconds
        self._interval = interval_seconds
        self._clock = clock
        self._next = clock() + min(FIRST_PASS_AFTER_SECONDS, interval_seconds)
        self._task: asyncio.Task[Pass] | None = None

    def tick(self, now: datetime) -> None:
        """From the maintenance loop: start a pass in the background when one is due (never waits)."""
        if self.days <= 0 or self._clock() < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = self._clock() + self._interval
        self._task = asyncio.create_task(self._logged(now))

    async def _logged(self, now: datetime) -> Pass:
        try:
            done = await self.prune(now)
        except Exception:
            log.exception("usage retention pass failed; the next pass retries")
            return Pass(0, 0)
        if done.rows:
            log.info("usage retention: deleted %d raw rows older than %d days", done.rows, self.days)
        return done

    async def prune(self, now: datetime) -> Pass:
        """Delete every raw row older than the retention window, ``batch_rows`` per transaction."""
        cutoff = now - timedelta(days=self.days)
        rows = batches = 0
        while batches < MAX_BATCHES:
            deleted = await self._driver.run(lambda: delete_batch(cutoff, self._batch), durable=False)
            batches += 1
            rows += deleted
            if deleted < self._batch:
                break
            await asyncio.sleep(self._pause)  # let request writes through between batches
        return Pass(rows, batches)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
