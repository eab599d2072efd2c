"""In-memory limiter for a single process on a single event loop.

Rules owned here:

- Sliding-window counter: time is cut into fixed windows aligned on the clock; the usage seen at time t
  is `previous * (1 - f) + current`, where f is the fraction of the current window already elapsed.
  Each bucket costs O(1) memory (two counters) whatever its traffic.
- `retry_after` solves that formula for the earliest moment the same hit fits, assuming no other
  traffic; it is never an estimate, so a client that waits that long is admitted.
- Memory is bounded, one store per class, so one class can never push another out (issue 11: a flood
  of unauthenticated addresses used to evict keys' concurrency slots):
  per-IP windows (buckets named ``ip:...``, at most `ip_windows`), per-key windows (every other rate
  bucket, at most `key_windows`) and concurrency slots (at most `slot_buckets`). A full window store
  drops its least recently used bucket, which forgets its usage and errs on the side of admitting.
  Live concurrency slots are never dropped: a full slot store first forgets buckets whose slots all
  expired, and if every bucket still holds a live slot, a new bucket's `acquire` is refused.
- Concurrency slots expire after their TTL. `release` frees the slot with the earliest expiry: the
  remaining slots then live at least as long as the real ones would, so a live holder never loses its
  slot early. The TTL must outlast the longest legitimate hold.
- No await happens between reading and writing a bucket, so one event loop needs no lock.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from app.limits.limiter import Decision

# Float slack when comparing weighted usage with an integer limit; far below one unit.
_SLACK = 1e-6
# Added to a computed retry_after so rounding in the clock arithmetic cannot land a retry just short.
_RETRY_MARGIN = 1e-6
_MIN_RETRY = 1e-3


class _Window:
    """Counters of one rate bucket; `index` is the number of the current fixed window."""

    __slots__ = ("current", "index", "previous", "window")

    def __init__(self, window: float, now: float) -> None:
        if not window > 0 or math.isinf(window):
            raise ValueError(f"window_seconds must be a positive finite number, got {window!r}")
        self.window = window
        self.index = int(now // window)
        self.current = 0
        self.previous = 0

    def roll(self, now: float) -> float:
        """Move to the window containing `now`; return the elapsed fraction of it, in [0, 1]."""
        window = self.window
        index = int(now // window)
        if index > self.index:
            self.previous = self.current if index == self.index + 1 else 0
            self.current = 0
            self.index = index
        elif index < self.index:
            return 0.0  # a clock that stepped back: count as the start of the window we already have
        fraction = (now - index * window) / window
        return 1.0 if fraction > 1.0 else fraction

    def retry_after(self, now: float, limit: int, cost: int) -> float:
        """Seconds until a hit of `cost` fits, for a bucket that just denied it."""
        window = self.window
        start = self.index * window
        if cost > limit:
            return max(self.reset_after(now), window)  # never fits; see app.limits.limiter
        headroom = limit - self.current - cost
        if headroom >= 0 and self.previous > 0:
            # Fits later in this window, once previous * (1 - f) has decayed to the headroom.
            target = start + (1.0 - headroom / self.previous) * window
        elif self.current > 0:
            # Only fits in the next window, once current (then weighted as previous) has decayed.
            target = start + window + max(0.0, 1.0 - (limit - cost) / self.current) * window
        else:
            target = start + window
        return max(target - now + _RETRY_MARGIN, _MIN_RETRY)

    def reset_after(self, now: float) -> float:
        """Seconds until the weighted usage is back to zero."""
        if self.current > 0:
            end = (self.index + 2) * self.window
        elif self.previous > 0:
            end = (self.index + 1) * self.window
        else:
            return 0.0
        return max(0.0, end - now)


def _remaining(limit: int, used: float) -> int:
    # Rounded down: never promise a unit the next hit would not get.
    return max(0, math.floor(limit - used + _SLACK))


IP_PREFIX = "ip:"  # rate buckets of client addresses (app.limits.checks), kept in their own store


class _Windows:
    """Rate windows of one class, least recently used first."""

    __slots__ = ("buckets", "max_size")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("a limiter store holds at least 1 bucket")
        self.max_size = max_size
        self.buckets: OrderedDict[str, _Window] = OrderedDict()

    def insert(self, bucket: str, state: _Window) -> None:
        self.buckets[bucket] = state
        if len(self.buckets) > self.max_size:
            self.buckets.popitem(last=False)


class MemoryLimiter:
    """`Limiter` backed by process memory. Not shared between workers or processes."""

    __slots__ = ("_clock", "_ip", "_keys", "_max_slot_buckets", "_slots")

    def __init__(
        self,
        *,
        ip_windows: int = 100_000,
        key_windows: int = 100_000,
        slot_buckets: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slot_buckets < 1:
            raise ValueError("a limiter store holds at least 1 bucket")
        self._ip = _Windows(ip_windows)
        self._keys = _Windows(key_windows)
        self._max_slot_buckets = slot_buckets
        self._clock = clock
        # bucket -> heap of its slots' expiry times; never evicted while a slot is live
        self._slots: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._ip.buckets) + len(self._keys.buckets) + len(self._slots)

    def __contains__(self, bucket: object) -> bool:
        return bucket in self._ip.buckets or bucket in self._keys.buckets or bucket in self._slots

    def sizes(self) -> dict[str, int]:
        """Buckets held per store (for tests and metrics)."""
        return {"ip": len(self._ip.buckets), "key": len(self._keys.buckets), "slots": len(self._slots)}

    async def hit(self, bucket: str, *, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        if cost < 0:
            raise ValueError("hit cost must not be negative; use add() to give units back")
        now = self._clock()
        state = self._window(bucket, window_seconds, now)
        fraction = state.roll(now)
        used = state.previous * (1.0 - fraction) + state.current
        if used + cost <= limit + _SLACK:
            state.current += cost
            return Decision(True, limit, _remaining(limit, used + cost), 0.0, state.reset_after(now))
        return Decision(
            False, limit, _remaining(limit, used), state.retry_after(now, limit, cost), state.reset_after(now)
        )

    async def add(self, bucket: str, *, window_seconds: float, cost: int) -> None:
        if cost <= 0 and bucket not in self._store(bucket).buckets:
            return  # nothing recorded, nothing to give back
        now = self._clock()
        state = self._window(bucket, window_seconds, now)
        state.roll(now)
        if cost >= 0:
            state.current += cost
            return
        # A refund corrects an earlier estimate, which was recorded in this window or the previous
        # one; take it from the current window first, then from the previous.
        refund = -cost
        taken = min(refund, state.current)
        state.current -= taken
        state.previous = max(0, state.previous - (refund - taken))

    async def acquire(self, bucket: str, *, limit: int, ttl_seconds: float) -> bool:
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        self._not_a_window(bucket)
        now = self._clock()
        slots = self._slots.get(bucket)
        if slots is None:
            if limit < 1 or not self._room_for_a_bucket(now):
                return False
            slots = self._slots[bucket] = []
        while slots and slots[0] <= now:
            heapq.heappop(slots)
        if len(slots) >= limit:
            return False
        heapq.heappush(slots, now + ttl_seconds)
        return True

    async def renew_slots(self) -> None:
        """Nothing to renew: these slots live and die with this process, their TTL covers a request."""
        return None

    async def release(self, bucket: str) -> None:
        self._not_a_window(bucket)
        slots = self._slots.get(bucket)
        if slots is None:
            return  # never acquired, or already expired and dropped: nothing to go below zero
        if slots:
            heapq.heappop(slots)
        now = self._clock()
        while slots and slots[0] <= now:
            heapq.heappop(slots)
        if not slots:
            del self._slots[bucket]

    def _room_for_a_bucket(self, now: float) -> bool:
        if len(self._slots) < self._max_slot_buckets:
            return True
        # Full: forget only buckets whose every slot expired (their holders died without releasing).
        for name in [name for name, slots in self._slots.items() if not slots or max(slots) <= now]:
            del self._slots[name]
        return len(self._slots) < self._max_slot_buckets

    def _store(self, bucket: str) -> _Windows:
        return self._ip if bucket.startswith(IP_PREFIX) else self._keys

    def _not_a_window(self, bucket: str) -> None:
        if bucket in self._store(bucket).buckets:
            raise ValueError(f"bucket {bucket!r} is a rate window, not a concurrency bucket")

    def _window(self, bucket: str, window_seconds: float, now: float) -> _Window:
        """The rate window of `bucket`, created if missing, marked most recently used."""
        if bucket in self._slots:
            raise ValueError(f"bucket {bucket!r} is a concurrency bucket, not a rate window")
        store = self._store(bucket)
        state = store.buckets.get(bucket)
        if state is None:
            state = _Window(window_seconds, now)
            store.insert(bucket, state)
            return state
        store.buckets.move_to_end(bucket)
        if state.window != window_seconds:
            # The configured window changed: old counts are in other units of time, start afresh.
            state = _Window(window_seconds, now)
            store.buckets[bucket] = state
        return state
