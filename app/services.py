"""The gateway's shared resources, built once in the app's lifespan and handed to every request.

Nothing here is created at import time; ``Gateway.start`` builds it from ``Settings`` and ``aclose``
tears it down. Background duties (hold recovery and the instance heartbeat) run in one task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field

from redis.asyncio import Redis

from app.catalog import Catalog
from app.clientip import TrustedProxies
from app.db import Database
from app.keys import KeyStore
from app.limits import FallbackLimiter, Limiter, MemoryLimiter, RedisLimiter, connect
from app.money.ledger import Ledger
from app.routing import Router
from app.settings import Settings
from app.upstream import Upstream

log = logging.getLogger("seedgate")

# a process counts as dead when it has not heart-beaten for this many recovery intervals
DEAD_AFTER_INTERVALS = 3


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


def build_limiter(settings: Settings) -> tuple[Limiter, Redis | None]:
    """In-memory limits for one process; with ``redis.url``, limits shared by every worker and host,
    falling back to local counting while Redis is unreachable (money never depends on Redis)."""
    local = MemoryLimiter(max_buckets=settings.limits.max_limiter_buckets)
    if settings.redis.url is None:
        return local, None
    client = connect(settings.redis.url.get_secret_value())
    shared = RedisLimiter(client, prefix=settings.redis.prefix)
    return FallbackLimiter(shared, local, max_buckets=settings.limits.max_limiter_buckets), client


@dataclass
class Gateway:
    settings: Settings
    db: Database
    catalog: Catalog
    keys: KeyStore
    ledger: Ledger
    limiter: Limiter
    upstreams: dict[str, Upstream]
    router: Router
    trusted: TrustedProxies
    instance_id: str
    redis: Redis | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    _background: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: Settings) -> Gateway:
        instance_id = settings.server.instance_id or f"inst_{secrets.token_hex(8)}"
        db = Database(settings.database.url, echo=settings.database.echo)
        upstreams = {u.name: Upstream(u) for u in settings.upstreams}
        limiter, redis = build_limiter(settings)
        gateway = cls(
            settings=settings,
            db=db,
            catalog=Catalog.from_settings(settings),
            keys=KeyStore(db, cache_ttl=settings.auth.cache_ttl_seconds),
            ledger=Ledger(db, owner=instance_id, hold_ttl=settings.billing.hold_ttl_seconds, writer=db.writer),
            limiter=limiter,
            redis=redis,
            upstreams=upstreams,
            router=Router(settings.routing, upstreams),
            trusted=TrustedProxies.parse(settings.server.trusted_proxies),
            instance_id=instance_id,
        )
        gateway.lifecycle.idle.set()
        await gateway.ledger.heartbeat()
        recovered = await gateway.ledger.recover(dead_after=gateway._dead_after)
        if recovered:
            log.warning("recovered %d holds left by stopped processes", recovered)
        gateway._background = asyncio.create_task(gateway._maintain())
        return gateway

    @property
    def _dead_after(self) -> float:
        return self.settings.billing.recovery_interval_seconds * DEAD_AFTER_INTERVALS

    async def _maintain(self) -> None:
        interval = self.settings.billing.recovery_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.ledger.heartbeat()
                recovered = await self.ledger.recover(dead_after=self._dead_after)
                if recovered:
                    log.warning("recovered %d stale holds", recovered)
            except Exception:
                log.exception("hold recovery failed; will retry")

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
        for upstream in self.upstreams.values():
            await upstream.aclose()
        await self.db.dispose()
