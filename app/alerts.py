"""Low-balance alerts: a signed webhook, fired once per fall below a key's threshold, delivered from an outbox.

Rules:
- A key's threshold is its own (``key_alerts.threshold``) or ``alerts.default_threshold_usd``.
- After a settlement the pipeline only *notices* the key (a set add, no I/O); the background task
  reads its balance. Below the threshold and armed, one transaction flips ``fired`` false -> true
  (a conditional UPDATE: only one process wins) and writes the outbox row. A top-up re-arms it.
- Each outbox row is POSTed to ``alerts.webhook_url`` with ``x-seedgate-signature: sha256=<hex>``,
  the HMAC-SHA256 of ``<x-seedgate-timestamp>.<body>`` under ``alerts.webhook_secret``. A non-2xx
  answer or a network error is retried after ``first_retry_seconds * 2**(attempt-1)`` (capped at an
  hour) up to ``max_attempts``, then the row is ``failed``. A row is claimed by a conditional UPDATE
  of its attempt count, so two instances never send the same attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.money.units import units_to_usd, usd_to_units
from app.settings import AlertsSettings
from app.tables import alert_deliveries, api_keys, key_alerts

log = logging.getLogger("seedgate.alerts")

POLL_SECONDS = 1.0
DELIVERY_BATCH = 20
MAX_BACKOFF_SECONDS = 3600.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff(settings: AlertsSettings, attempts: int) -> float:
    return float(min(MAX_BACKOFF_SECONDS, settings.first_retry_seconds * 2 ** max(0, attempts - 1)))


async def set_threshold(db: Database, key_id: str, threshold: int | None) -> None:
    """A key's own threshold in units (None: the configured default); re-arms the alert."""
    async with db.write() as conn:
        changed = await conn.execute(
            update(key_alerts).where(key_alerts.c.key_id == key_id).values(threshold=threshold, fired=False)
        )
        if changed.rowcount == 0:
            await conn.execute(insert(key_alerts).values(key_id=key_id, threshold=threshold, fired=False))


async def rearm(db: Database, key_id: str) -> None:
    async with db.write() as conn:
        await conn.execute(update(key_alerts).where(key_alerts.c.key_id == key_id).values(fired=False))


async def key_alert_state(db: Database, key_id: str, settings: AlertsSettings) -> dict[str, Any]:
    async with db.read() as conn:
        row = (await conn.execute(select(key_alerts).where(key_alerts.c.key_id == key_id))).first()
    own = row.threshold if row is not None else None
    threshold = own if own is not None else usd_to_units(settings.default_threshold_usd)
    return {
        "threshold_usd": units_to_usd(threshold),
        "own_threshold": own is not None,
        "fired": bool(row.fired) if row is not None else False,
    }


async def list_deliveries(db: Database, *, key_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = select(alert_deliveries).order_by(alert_deliveries.c.id.desc()).limit(limit)
    if key_id is not None:
        query = query.where(alert_deliveries.c.key_id == key_id)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "id": r.id,
            "key_id": r.key_id,
            "event": r.event,
            "status": r.status,
            "attempts": r.attempts,
            "next_attempt_at": r.next_attempt_at.isoformat() if r.status == "pending" else None,
            "last_error": r.last_error,
            "created_at": r.created_at.isoformat(),
            "delivered_at": r.delivered_at.isoformat() if r.delivered_at else None,
            "payload": orjson.loads(r.payload),
        }
        for r in rows
    ]


class Alerts:
    """The background half: checks noticed keys, fires alerts into the outbox, delivers the outbox."""

    def __init__(self, db: Database, settings: AlertsSettings) -> None:
        self.db = db
        self.settings = settings
        self._noticed: set[str] = set()
        self._wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.webhook_url is not None

    def notice(self, key_id: str) -> None:
        """After a settlement: check this key's balance soon (never blocks the request)."""
        if self.enabled:
            self._noticed.add(key_id)
            self._wake.set()

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            try:
                noticed, self._noticed = self._noticed, set()
                for key_id in noticed:
                    await self.check(key_id)
                await self.deliver_due()
            except Exception:
                log.exception("alert check or delivery failed; will retry")

    async def check(self, key_id: str) -> bool:
        """Fire the key's low-balance alert if it is below its threshold and armed; True if fired."""
        default = usd_to_units(self.settings.default_threshold_usd)
        query = (
            select(api_keys.c.name, api_keys.c.available, key_alerts.c.threshold, key_alerts.c.fired)
            .select_from(api_keys.outerjoin(key_alerts, key_alerts.c.key_id == api_keys.c.id))
            .where(api_keys.c.id == key_id)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.fired:
            return False
        threshold = row.threshold if row.threshold is not None else default
        if row.available >= threshold:
            return False
        now = datetime.now(UTC)
        payload = {
            "event": "balance.low",
            "key_id": key_id,
            "key_name": row.name,
            "balance_usd": units_to_usd(row.available),
            "threshold_usd": units_to_usd(threshold),
            "created_at": now.isoformat(),
        }
        try:
            async with self.db.write() as conn:
                if row.threshold is None and row.fired is None:
                    await conn.execute(insert(key_alerts).values(key_id=key_id, threshold=None, fired=True))
                else:
                    flipped = await conn.execute(
                        update(key_alerts)
                        .where(key_alerts.c.key_id == key_id, key_alerts.c.fired.is_(False))
                        .values(fired=True)
                    )
                    if flipped.rowcount != 1:
                        return False
                await conn.execute(
                    insert(alert_deliveries).values(
                        key_id=key_id,
                        event="balance.low",
                        payload=orjson.dumps(payload).decode(),
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
        except IntegrityError:
            return False  # another process inserted the state row first: it fired
        self._wake.set()
        return True

    async def deliver_due(self) -> int:
        """Send every pending delivery whose time has come (one batch); how many succeeded."""
        now = datetime.now(UTC)
        query = (
            select(alert_deliveries)
            .where(alert_deliveries.c.status == "pending", alert_deliveries.c.next_attempt_at <= now)
            .order_by(alert_deliveries.c.id)
            .limit(DELIVERY_BATCH)
        )
        async with self.db.read() as conn:
            due = (await conn.execute(query)).all()
        delivered = 0
        for row in due:
            delivered += await self._attempt(row)
        return delivered

    async def _attempt(self, row: Any) -> int:
        attempt = row.attempts + 1
        lease = datetime.now(UTC) + timedelta(seconds=self.settings.timeout_seconds * 2)
        async with self.db.write() as conn:
            claimed = await conn.execute(
                update(alert_deliveries)
                .where(alert_deliveries.c.id == row.id, alert_deliveries.c.attempts == row.attempts)
                .values(attempts=attempt, next_attempt_at=lease)
            )
        if claimed.rowcount != 1:
            return 0
        error = await self._post(row.id, row.payload.encode("utf-8"))
        now = datetime.now(UTC)
        if error is None:
            values: dict[str, Any] = {"status": "delivered", "delivered_at": now, "last_error": None}
        elif attempt >= self.settings.max_attempts:
            values = {"status": "failed", "last_error": error[:300]}
        else:
            retry_at = now + timedelta(seconds=backoff(self.settings, attempt))
            values = {"next_attempt_at": retry_at, "last_error": error[:300]}
        async with self.db.write() as conn:
            await conn.execute(update(alert_deliveries).where(alert_deliveries.c.id == row.id).values(**values))
        if error is not None:
            log.warning("alert delivery %d attempt %d failed: %s", row.id, attempt, error)
        else:
            self._wake.set()  # more may be due
        return 1 if error is None else 0

    async def _post(self, delivery_id: int, body: bytes) -> str | None:
        """None when the receiver took it (2xx), else why not."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds))
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "user-agent": "seedgate-alerts",
            "x-seedgate-event": "balance.low",
            "x-seedgate-delivery": str(delivery_id),
            "x-seedgate-timestamp": timestamp,
            "x-seedgate-signature": sign(self.settings.webhook_secret.get_secret_value(), timestamp, body),
        }
        try:
            async with self._http.post(str(self.settings.webhook_url), data=body, headers=headers) as response:
                await response.read()
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.close()
