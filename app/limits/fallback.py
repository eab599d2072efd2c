"""A limiter that counts in a shared backend (Redis) and falls back to local counting while it is away.

Rules owned here:

- Every call goes to the primary. When it fails with a backend error (`BACKEND_ERRORS`: anything redis-py
  raises, and OS-level socket errors), that call is answered by the fallback (in-memory) limiter, and
  the primary is left alone for `retry_seconds`; then a single call probes it again while the others
  keep counting locally. Requests never fail because the shared store did: limits fail open to local
  counting, which is per process and therefore looser, and money never depends on any of this.
- One warning per outage, when the primary goes away, and one info line when a probe finds it back;
  nothing per request.
- Argument errors (`ValueError`) are bugs, not outages, and propagate.
- A concurrency slot is released on the backend that granted it: per bucket, the slots this process
  holds on each backend are counted. A release frees a local slot first, so the shared count never
  drops below the number of its live holders. A shared slot whose release fails stays until its TTL.
- That book is bounded (`max_buckets`, least recently used dropped first); a release for a bucket it
  no longer knows goes to whichever backend is in use.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from app.limits.limiter import Decision, Limiter

logger = logging.getLogger(__name__)

BACKEND_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)

T = TypeVar("T")


class _Held:
    """Slots of one bucket this process holds, by backend."""

    __slots__ = ("local", "shared")

    def __init__(self) -> None:
        self.shared = 0
        self.local = 0


class FallbackLimiter:
    """`Limiter` answering from `primary`, or from `fallback` while `primary` is unreachable."""

    __slots__ = ("_clock", "_down_until", "_errors", "_fallback", "_held", "_max_buckets", "_primary", "_retry")

    def __init__(
        self,
        primary: Limiter,
        fallback: Limiter,
        *,
        retry_seconds: float = 5.0,
        errors: tuple[type[Exception], ...] = BACKEND_ERRORS,
        max_buckets: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_seconds > 0:
            raise ValueError(f"retry_seconds must be positive, got {retry_seconds!r}")
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self._primary = primary
        self._fallback = fallback
        self._retry = retry_seconds
        self._errors = errors
        self._max_buckets = max_buckets
        self._clock = clock
        # None while the primary is in use; else when the next probe of it is due.
        self._down_until: float | None = None
        self._held: OrderedDict[str, _Held] = OrderedDict()

    @property
    def degraded(self) -> bool:
        """True while answers come from the fallback (for health checks and metrics)."""
        return self._down_until is not None

    async def hit(self, bucket: str, *, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        decision, _ = await self._call(lambda b: b.hit(bucket, limit=limit, window_seconds=window_seconds, cost=cost))
        return decision

    async def add(self, bucket: str, *, window_seconds: float, cost: int) -> None:
        await self._call(lambda b: b.add(bucket, window_seconds=window_seconds, cost=cost))

    async def acquire(self, bucket: str, *, limit: int, ttl_seconds: float) -> bool:
        granted, shared = await self._call(lambda b: b.acquire(bucket, limit=limit, ttl_seconds=ttl_seconds))
        if granted:
            held = self._held.get(bucket)
            if held is None:
                held = self._held[bucket] = _Held()
                if len(self._held) > self._max_buckets:
                    self._held.popitem(last=False)
            else:
                self._held.move_to_end(bucket)
            if shared:
                held.shared += 1
            else:
                held.local += 1
        return granted

    async def release(self, bucket: str) -> None:
        held = self._held.get(bucket)
        if held is None:
            await self._call(lambda b: b.release(bucket))
            return
        if held.local > 0:
            held.local -= 1
            on_primary = False
        else:
            held.shared -= 1
            on_primary = True
        if held.local == 0 and held.shared == 0:
            del self._held[bucket]
        if not on_primary:
            await self._fallback.release(bucket)
            return
        # Tried even while the primary is marked down: a slot left behind would block the bucket for
        # its whole TTL, and a release happens once per held slot, not once per request.
        try:
            await self._primary.release(bucket)
        except self._errors as exc:
            self._failed(exc)

    async def renew_slots(self) -> None:
        """The shared backend's slots held here (the fallback's live with this process)."""
        try:
            await self._primary.renew_slots()
        except self._errors as exc:
            self._failed(exc)

    async def _call(self, op: Callable[[Limiter], Awaitable[T]]) -> tuple[T, bool]:
        """Run `op` on the primary when it is usable, else on the fallback; say which answered."""
        down_until = self._down_until
        probing = down_until is not None
        if down_until is not None:
            now = self._clock()
            if now < down_until:
                return await op(self._fallback), False
            # This call is the probe; calls arriving meanwhile stay local until the next due time.
            self._down_until = now + self._retry
        try:
            result = await op(self._primary)
        except self._errors as exc:
            self._failed(exc)
            return await op(self._fallback), False
        if probing and self._down_until is not None:
            # Only a probe may declare recovery: a call started before the outage and finishing after
            # it began says nothing about now.
            self._down_until = None
            logger.info("rate limit backend is reachable again; limits are shared again")
        return result, True

    def _failed(self, exc: Exception) -> None:
        if self._down_until is None:
            logger.warning(
                "rate limit backend unreachable (%s: %s); counting locally in this process, retrying every %g s",
                type(exc).__name__,
                exc,
                self._retry,
            )
        self._down_until = self._clock() + self._retry
