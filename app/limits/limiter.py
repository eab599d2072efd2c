"""The limiter interface every backend implements, its decision, and the HTTP headers for it.

Rules owned here:

- `hit` admits `cost` units only if `used + cost <= limit` inside the sliding window, and records them;
  a denied hit records nothing, so a client hammering a closed limit does not push its own reopening
  further away.
- `add` records usage unconditionally (a token estimate corrected after the fact); usage never goes below 0.
- `acquire`/`release` hold concurrency slots; each slot expires after its TTL as a safety net for a
  holder that died without releasing. `release` never takes the count below zero.
- A hit whose `cost` exceeds `limit` can never be admitted; callers should reject it outright rather
  than ask the client to retry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float  # seconds until this request would be allowed (0 when allowed)
    reset_after: float  # seconds until the window fully resets


class Limiter(Protocol):
    async def hit(self, bucket: str, *, limit: int, window_seconds: float, cost: int = 1) -> Decision: ...

    async def add(self, bucket: str, *, window_seconds: float, cost: int) -> None: ...

    async def acquire(self, bucket: str, *, limit: int, ttl_seconds: float) -> bool: ...

    async def release(self, bucket: str) -> None: ...

    async def renew_slots(self) -> None:
        """Keep this process's live concurrency slots from lapsing (a shared backend leases them)."""
        ...


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    """`retry-after` (only when denied) and `x-ratelimit-*` headers, in whole seconds rounded up."""
    headers: dict[str, str] = {}
    if not decision.allowed:
        # Rounded up and at least 1: a client that waits exactly this long must be admitted, and
        # "Retry-After: 0" invites a tight retry loop.
        headers["retry-after"] = str(max(1, math.ceil(decision.retry_after)))
    headers["x-ratelimit-limit"] = str(decision.limit)
    headers["x-ratelimit-remaining"] = str(max(0, decision.remaining))
    headers["x-ratelimit-reset"] = str(max(0, math.ceil(decision.reset_after)))
    return headers
