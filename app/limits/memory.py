"""In-memory limiter for a single process on a single event loop.

Rules owned here:

- Sliding-window counter: time is cut into fixed windows aligned on the clock; the usage seen at time t
  is `previous * (1 - f) + current`, where f is the fraction of the current window already elapsed.
  Each bucket costs O(1) memory (two counters) whatever its traffic.
- `retry_after` solves that formula for the earliest moment the same hit fits, assuming no other
  traffic; it is never an estimate, so a client that waits that long is admitted.
- Memory is bounded: at most `max_buckets` buckets (rate windows and concurrency slots together) are
  kept, and the least recently used is dropped first. Dropping a bucket forgets its usage, which errs
  on the side of admitting.
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


class MemoryLimiter:
    """`Limiter` backed by process memory. Not shared between workers or processes."""

    __slots__ = ("_buckets", "_clock", "_max_buckets")

    def __init__(self, max_buckets: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self._max_buckets = max_buckets
        self._clock = clock
        # Values are a rate window or a heap of slot expiry times; insertion order is recency order.
        self._buckets: OrderedDict[str, _Window | list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, bucket: object) -> bool:
        return bucket in self._buckets

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
        if cost <= 0 and bucket not in self._buckets:
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
        now = self._clock()
        slots = self._buckets.get(bucket)
        if slots is None:
            if limit < 1:
                return False
            slots = []
            self._insert(bucket, slots)
        elif isinstance(slots, _Window):
            raise ValueError(f"bucket {bucket!r} is a rate window, not a concurrency bucket")
        else:
            self._buckets.move_to_end(bucket)
        while slots and slots[0] <= now:
            heapq.heappop(slots)
        if len(slots) >= limit:
            return False
        heapq.heappush(slots, now + ttl_seconds)
        return True

    async def release(self, bucket: str) -> None:
        slots = self._buckets.get(bucket)
        if slots is None:
            return  # never acquired, already expired and dropped, or evicted: nothing to go below zero
        if isinstance(slots, _Window):
            raise ValueError(f"bucket {bucket!r} is a rate window, not a concurrency bucket")
        if slots:
            heapq.heappop(slots)
        now = self._clock()
        while slots and slots[0] <= now:
            heapq.heappop(slots)
        if not slots:
            del self._buckets[bucket]

    def _window(self, bucket: str, window_seconds: float, now: float) -> _Window:
        """The rate window of `bucket`, created if missing, marked most recently used."""
        state = self._buckets.get(bucket)
        if state is None:
            state = _Window(window_seconds, now)
            self._insert(bucket, state)
            return state
        if not isinstance(state, _Window):
            raise ValueError(f"bucket {bucket!r} is a concurrency bucket, not a rate window")
        self._buckets.move_to_end(bucket)
        if state.window != window_seconds:
            # The configured window changed: old counts are in other units of time, start afresh.
            state = _Window(window_seconds, now)
            self._buckets[bucket] = state
        return state

    def _insert(self, bucket: str, state: _Window | list[float]) -> None:
        self._buckets[bucket] = state
        if len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)
