"""Circuit breaking and health figures per upstream target.

A target's circuit opens after ``breaker_failures`` consecutive failures (connect errors, timeouts,
429 and 5xx answers -- never the client's own 4xx), stays open for ``breaker_cooldown_seconds``, then
lets exactly one probe through (half-open): its success closes the circuit, its failure re-opens it.
A probe that never reports back (the client's own 4xx, a cancelled request) lapses after another
cool-down, so a lost verdict cannot shut a target out for good.
Recent error rate and latency are kept for ``GET /admin/upstreams``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

RECENT = 100  # outcomes kept per target for the error rate


def _ignore(_key: str, _is_open: bool) -> None:
    return None


class Breaker:
    def __init__(
        self,
        key: str,
        *,
        failures: int,
        cooldown: float,
        clock: Callable[[], float],
        on_change: Callable[[str, bool], None] = _ignore,
    ) -> None:
        self.key = key
        self._on_change = on_change  # (key, open or half-open?) on every state change: the circuit gauge
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self.state = "closed"  # closed | open | half_open
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self._probing = False
        self._probe_at = 0.0
        self._recent: deque[bool] = deque(maxlen=RECENT)
        self._latency_ms: deque[float] = deque(maxlen=RECENT)

    def allows(self) -> bool:
        """May a request go to this target now? Claims the single probe of a half-open circuit."""
        if self.state == "closed":
            return True
        if self.state == "open" and self._clock() - self.opened_at >= self._cooldown:
            self.state = "half_open"  # still not closed: the gauge stays at 1
            self._probing = False
        if self.state == "half_open" and (not self._probing or self._clock() - self._probe_at >= self._cooldown):
            self._probing = True
            self._probe_at = self._clock()
            return True
        return False

    def reopens_in(self) -> float:
        return max(0.0, self.opened_at + self._cooldown - self._clock()) if self.state == "open" else 0.0

    def success(self, latency_ms: float) -> None:
        if self.state != "closed":
            self._on_change(self.key, False)
        self.state = "closed"
        self.consecutive_failures = 0
        self._probing = False
        self._recent.append(True)
        self._latency_ms.append(latency_ms)

    def failure(self) -> None:
        self._recent.append(False)
        self.consecutive_failures += 1
        if self.state == "half_open" or self.consecutive_failures >= self._threshold:
            if self.state == "closed":
                self._on_change(self.key, True)
            self.state = "open"
            self.opened_at = self._clock()
            self._probing = False

    def snapshot(self) -> dict[str, Any]:
        latencies = sorted(self._latency_ms)
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "recent_requests": len(self._recent),
            "recent_error_rate": round(self._recent.count(False) / len(self._recent), 4) if self._recent else 0.0,
            "latency_ms_p50": round(latencies[len(latencies) // 2], 1) if latencies else None,
            "latency_ms_p90": round(latencies[int(len(latencies) * 0.9)], 1) if latencies else None,
            "reopens_in_seconds": round(self.reopens_in(), 3),
        }


class Breakers:
    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, bool], None] = _ignore,
    ) -> None:
        self._failures = failures
        self._cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._health: dict[str, Breaker] = {}

    def __getitem__(self, key: str) -> Breaker:
        health = self._health.get(key)
        if health is None:
            health = Breaker(
                key, failures=self._failures, cooldown=self._cooldown, clock=self._clock, on_change=self._on_change
            )
            self._health[key] = health
            self._on_change(key, False)  # the target appears in the gauge, closed
        return health

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {key: health.snapshot() for key, health in sorted(self._health.items())}
