"""Choosing upstream targets and failing over between them.

Order: by ``priority`` (lower first); within a priority, a weighted random order (each target's key
is ``random() ** (1 / weight)``, largest first), so traffic splits by weight and every target is a
fallback for the others. Targets whose circuit is open are skipped.

Retry rule (docs/reliability.md "Upstream calls"): another attempt is made only when the upstream never
accepted the request -- a connect error, a pool timeout, or an HTTP 429/5xx answer before any
content -- and nothing has been sent to the client, which holds by construction: attempts happen
before the response starts. At most ``routing.max_attempts`` attempts (cycling over the targets),
with exponential back-off that honours the upstream's ``Retry-After`` and never passes the deadline.
Each attempt is bounded by the request's total deadline too, not only by the upstream's idle timeout.
One reservation covers all attempts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from app.breaker import Breakers
from app.catalog import CatalogModel, Target
from app.errors import ServiceUnavailable, UpstreamTimeout
from app.metrics import Metrics
from app.settings import RoutingSettings
from app.upstream import Upstream, UpstreamFailure, UpstreamResponse


def attempt_status(failure: UpstreamFailure) -> str:
    """The ``status`` label of a failed attempt: the upstream's HTTP status, else what went wrong."""
    if failure.upstream_status is not None:
        return str(failure.upstream_status)
    return "timeout" if isinstance(failure.error, UpstreamTimeout) else "unreachable"


class Router:
    def __init__(
        self,
        settings: RoutingSettings,
        upstreams: dict[str, Upstream],
        *,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self.metrics = metrics or Metrics()
        self.breakers = Breakers(
            failures=settings.breaker_failures,
            cooldown=settings.breaker_cooldown_seconds,
            on_change=self.metrics.circuit,
        )
        self._rng = rng or random.Random()  # noqa: S311 -- load spreading, not security

    def order(self, model: CatalogModel) -> list[Target]:
        ranked: list[tuple[int, float, Target]] = []
        for target in model.targets:
            ranked.append((target.priority, -(self._rng.random() ** (1 / target.weight)), target))
        ranked.sort(key=lambda item: (item[0], item[1]))
        return [target for _, _, target in ranked]

    async def open(
        self,
        model: CatalogModel,
        body: dict[str, Any],
        *,
        deadline: float,
        sending: Callable[[bool], None] = lambda _sent: None,
    ) -> tuple[Target, UpstreamResponse, int]:
        """The first target that accepts the request: ``(target, 200 response, attempts made)``.

        ``sending(True)`` is called as an attempt goes out, ``sending(False)`` when it never reached the
        upstream: a crash in between is charged as if the upstream had the request.
        """
        order = self.order(model)
        loop = asyncio.get_running_loop()
        delay = self.settings.backoff_seconds
        attempts = 0
        last: UpstreamFailure | None = None
        while attempts < self.settings.max_attempts:
            target = self._pick(order, attempts)
            if target is None:
                break
            if attempts:
                wait = min(max(delay, (last.retry_after if last else None) or 0.0), self.settings.max_backoff_seconds)
                if loop.time() + wait >= deadline:
                    break
                await asyncio.sleep(wait)
                delay *= 2
            attempts += 1
            sending(True)
            breaker = self.breakers[target.key]
            started = time.perf_counter()
            try:
                response = await self._attempt(target, body, deadline)
            except UpstreamFailure as failure:
                self.metrics.upstream_attempt(target.upstream, attempt_status(failure))
                failure.attempts = attempts
                if failure.retryable or failure.error.status >= 500:
                    breaker.failure()
                if not failure.retryable:
                    raise
                sending(False)  # retryable: it never reached the upstream, or was refused before any work
                last = failure
                continue
            self.metrics.upstream_attempt(target.upstream, str(response.status))
            breaker.success((time.perf_counter() - started) * 1000)
            return target, response, attempts
        if last is not None:
            raise last
        soonest = min((self.breakers[t.key].reopens_in() for t in order), default=1.0)
        raise ServiceUnavailable(
            "Every upstream for this model is failing; retry shortly.",
            headers={"retry-after": str(max(1, round(soonest)))},
            fallback_suggestion="try different model",
        )

    async def _attempt(self, target: Target, body: dict[str, Any], deadline: float) -> UpstreamResponse:
        """One call, bounded by the request's total deadline as well as the upstream's own timeouts."""
        try:
            async with asyncio.timeout_at(deadline):
                return await self.upstreams[target.upstream].open(
                    {**body, "model": target.upstream_model}, read_timeout=target.read_timeout
                )
        except TimeoutError:
            # the deadline passed while the upstream held the request: no time is left for another try,
            # and the upstream worked on it
            error = UpstreamTimeout("The upstream service timed out.")
            raise UpstreamFailure(error, retryable=False, accepted=True) from None

    def _pick(self, order: list[Target], attempt: int) -> Target | None:
        """The next target in rotation whose circuit lets a request through."""
        for offset in range(len(order)):
            target = order[(attempt + offset) % len(order)]
            if self.breakers[target.key].allows():
                return target
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        health = self.breakers.snapshot()
        return [{"target": key, "upstream": key.split("/", 1)[0], **figures} for key, figures in health.items()]
