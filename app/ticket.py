"""A ticket: everything an admitted request holds, and the one way to give it back.

Admission takes four things: an in-flight slot (graceful shutdown waits for it), a concurrency slot,
a token-per-minute estimate and a money hold. ``finish`` (settle with what was consumed) or ``abort``
(release, nothing consumed) returns all four; whichever runs first wins and the other does nothing,
so every path -- success, upstream failure, client disconnect, cancellation -- ends exactly once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from app.catalog import CatalogModel, Target
from app.keys import KeyRecord
from app.money.ledger import Hold, UsageRecord
from app.money.tokens import TokenUsage
from app.services import Gateway

log = logging.getLogger("seedgate.request")


@dataclass(slots=True)
class Plan:
    """The worst case a request may cost, decided before anything is sent upstream."""

    prompt_tokens: int
    max_output_tokens: int
    hold_amount: int
    prompt_cost: int


@dataclass(slots=True)
class Ticket:
    gw: Gateway
    request_id: str
    key: KeyRecord
    model: CatalogModel
    plan: Plan
    endpoint: str
    stream: bool
    started: float
    hold: Hold | None = None
    target: Target | None = None
    done: bool = False
    concurrency_bucket: str = field(default="")

    @property
    def latency_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    async def finish(self, usage: TokenUsage | None, *, status: str, partial: bool, output_tokens: int = 0) -> None:
        """Settle: charge the upstream's usage, or an estimate marked ``estimated`` when none arrived."""
        if self.done:
            return
        self.done = True
        estimated = usage is None
        if usage is None:
            usage = TokenUsage(prompt_tokens=self.plan.prompt_tokens, completion_tokens=output_tokens)
        cost = usage.cost(self.model.prices)
        try:
            if self.hold is not None:
                record = UsageRecord(
                    model=self.model.id,
                    upstream=self.target.upstream if self.target else None,
                    upstream_model=self.target.upstream_model if self.target else None,
                    endpoint=self.endpoint,
                    stream=self.stream,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    reasoning_tokens=usage.reasoning_tokens,
                    cached_tokens=usage.cached_tokens,
                    cost=cost,
                    status=status,
                    partial=partial,
                    estimated=estimated,
                    latency_ms=self.latency_ms,
                )
                settlement = await self.gw.ledger.settle(self.hold, record)
                if settlement is not None and settlement.shortfall:
                    log.warning("request %s cost exceeded its hold by %d units", self.request_id, settlement.shortfall)
        except Exception:
            # the hold stays 'held'; recovery settles it from the prompt estimate
            log.exception("settlement of %s failed", self.request_id)
        finally:
            await self._return_limits(usage.prompt_tokens + usage.completion_tokens)
        log.info(
            "request %s key=%s model=%s status=%s stream=%s prompt=%d completion=%d cost_units=%d%s ms=%d",
            self.request_id,
            self.key.id,
            self.model.id,
            status,
            self.stream,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost,
            " estimated" if estimated else "",
            self.latency_ms,
        )

    async def abort(self, reason: str) -> None:
        """Release: nothing was consumed."""
        if self.done:
            return
        self.done = True
        try:
            if self.hold is not None:
                await self.gw.ledger.release(self.hold)
        except Exception:
            log.exception("release of %s failed", self.request_id)
        finally:
            await self._return_limits(0)
        log.info("request %s key=%s model=%s aborted: %s", self.request_id, self.key.id, self.model.id, reason)

    async def _return_limits(self, tokens_used: int) -> None:
        try:
            if self.concurrency_bucket:
                await self.gw.limiter.release(self.concurrency_bucket)
            correction = tokens_used - self.plan.prompt_tokens
            if correction:
                await self.gw.limiter.add(f"tpm:{self.key.id}", window_seconds=60, cost=correction)
        finally:
            self.gw.lifecycle.leave()
