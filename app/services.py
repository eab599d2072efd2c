"""The gateway's services, built once in the app's lifespan and handed to the request flow.

Nothing here is created at import time; ``Services.start`` builds everything from ``Settings`` and
``aclose`` tears it down. The pipeline receives this object and hands each step only the services it
uses. Background duties run in one task: every ``billing.checkpoint_interval_seconds`` the live holds'
progress is saved and their leases renewed; every ``billing.recovery_interval_seconds`` holds whose
lease lapsed are recovered and stored Responses answers past their retention deleted; raw usage rows
past ``billing.usage_retention_days`` are pruned in their own task (``app.retention``), so a long pass
never delays a lease renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from app.alerts import Alerts
from app.catalog import Catalog
from app.clientip import TrustedProxies
from app.console.queries import FinalHours
from app.db import Database
from app.dialects import Dialect
from app.dialects.anthropic.dialect import AnthropicMessages, Signer
from app.dialects.openai_chat import OpenAIChat
from app.dialects.responses.dialect import OpenAIResponses
from app.dialects.responses.seal import Sealer
from app.keys import KeyStore
from app.limits import FallbackLimiter, Limiter, MemoryLimiter, RedisLimiter, connect
from app.metrics import Metrics
from app.money.leases import Leases
from app.money.ledger import Ledger, utcnow
from app.retention import UsageRetention
from app.routing import Router
from app.settings import Settings, UpstreamSettings
from app.stored_responses import ResponseStore
from app.upstream import Transport, Upstream
from app.usage_summary import DayTotals

log = logging.getLogger("seedgate")

TransportFactory = Callable[[UpstreamSettings], Transport]


@dataclass
class Lifecycle:
    """Readiness and the requests still running, for graceful shutdown."""

    draining: bool = False
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()


def build_limiter(settings: Settings, owner: str) -> tuple[Limiter, Redis | None]:
    """In-memory limits for one process; with ``redis.url``, limits shared by every worker and host,
    falling back to local counting while Redis is unreachable (money never depends on Redis). Shared
    concurrency slots are leased to ``owner`` for ``billing.hold_ttl_seconds``, like its holds."""
    limits = settings.limits
    local = MemoryLimiter(
        ip_windows=limits.max_ip_buckets, key_windows=limits.max_key_buckets, slot_buckets=limits.max_slot_buckets
    )
    if settings.redis.url is None:
        return local, None
    client = connect(settings.redis.url.get_secret_value())
    shared = RedisLimiter(
        client, prefix=settings.redis.prefix, owner=owner, lease_seconds=settings.billing.hold_ttl_seconds
    )
    return FallbackLimiter(shared, local, max_buckets=limits.max_slot_buckets), client


def build_dialects(settings: Settings, stored: ResponseStore) -> dict[str, Dialect]:
    """The billed endpoints, by path."""
    master = settings.admin.master_key.get_secret_value()
    signer = Signer(master)
    return {
        "/v1/chat/completions": OpenAIChat(),
        "/v1/messages": AnthropicMessages(signer),
        "/v1/responses": OpenAIResponses(Sealer(master, "seedgate responses reasoning"), stored),
    }


def build_response_store(settings: Settings, db: Database) -> ResponseStore:
    """Stored Responses API answers, sealed under their own key, kept ``responses.retention_days``."""
    sealer = Sealer(settings.admin.master_key.get_secret_value(), "seedgate stored responses")
    return ResponseStore(db, sealer, retention_days=settings.responses.retention_days)


@dataclass
class Services:
    settings: Settings
    db: Database
    catalog: Catalog
    keys: KeyStore
    ledger: Ledger
    leases: Leases
    limiter: Limiter
    upstreams: dict[str, Upstream]
    router: Router
    trusted: TrustedProxies
    dialects: dict[str, Dialect]
    instance_id: str
    stored_responses: ResponseStore
    alerts: Alerts  # low-balance webhooks (issue 13)
    metrics: Metrics
    redis: Redis | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    _background: asyncio.Task[None] | None = None
    _retention: UsageRetention | None = None
    usage_days: DayTotals = field(default_factory=DayTotals)  # final days' totals for usage summaries
    usage_hours: FinalHours = field(default_factory=FinalHours)  # final hours of the console's 24-hour chart

    @classmethod
    async def start(cls, settings: Settings, *, transport: TransportFactory | None = None) -> Services:
        instance_id = settings.server.instance_id or f"inst_{secrets.token_hex(8)}"
        db = Database(settings.database.url, echo=settings.database.echo)
        metrics = Metrics()
        upstreams = {u.name: Upstream(u, transport(u) if transport else None) for u in settings.upstreams}
        limiter, redis = build_limiter(settings, instance_id)
        stored_responses = build_response_store(settings, db)
        ledger = Ledger(
            db,
            owner=instance_id,
            lease_seconds=settings.billing.hold_ttl_seconds,
            durable_requests=settings.database.sqlite_durability == "fsync",
        )
        services = cls(
            settings=settings,
            db=db,
            catalog=Catalog.from_settings(settings),
            keys=KeyStore(db, cache_ttl=settings.auth.cache_ttl_seconds),
            ledger=ledger,
            leases=Leases(ledger, outstanding=metrics.holds_outstanding),
            limiter=limiter,
            redis=redis,
            upstreams=upstreams,
            router=Router(settings.routing, upstreams, metrics=metrics),
            trusted=TrustedProxies.parse(settings.server.trusted_proxies),
            dialects=build_dialects(settings, stored_responses),
            instance_id=instance_id,
            stored_responses=stored_responses,
            alerts=Alerts(db, settings.alerts),
            metrics=metrics,
        )
        services.lifecycle.idle.set()
        recovered = await ledger.recover(charged=services.alerts.notice)
        if recovered:
            log.warning("recovered %d holds whose lease had lapsed", recovered)
        services._retention = UsageRetention(db, days=settings.billing.usage_retention_days)
        services._background = asyncio.create_task(services._maintain())
        services.alerts.start()
        return services

    async def _maintain(self) -> None:
        billing = self.settings.billing
        next_recovery = time.monotonic() + billing.recovery_interval_seconds
        while True:
            await asyncio.sleep(billing.checkpoint_interval_seconds)
            try:
                await self.leases.tick(utcnow())
                await self.limiter.renew_slots()  # a shared backend's concurrency slots, leased like holds
                if time.monotonic() >= next_recovery:
                    next_recovery = time.monotonic() + billing.recovery_interval_seconds
                    await self.ledger.recover(charged=self.alerts.notice)
                    await self.stored_responses.purge()  # retention of stored Responses answers
                if self._retention is not None:
                    self._retention.tick(utcnow())
            except Exception:
                log.exception("checkpoint or recovery failed; will retry")

    async def drain(self, grace: float) -> None:
        """Refuse new work, then wait up to ``grace`` seconds for running requests to finish."""
        self.lifecycle.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.lifecycle.idle.wait()

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        if self._retention is not None:
            await self._retention.aclose()
        for upstream in self.upstreams.values():
            await upstream.aclose()
        await self.alerts.aclose()
        await self.db.dispose()
        self.metrics.close()
