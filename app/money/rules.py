"""Every pricing rule, each in one function with its reason.

Amounts are integer units of 1e-12 USD (``app.money.units``); prices are units per token
(``app.catalog.Prices``). Nothing here does I/O: the pipeline and the ledger's transactions call
these functions, so a rule is changed in one place and tested once (``tests/unit/test_money_rules.py``).

What a request is charged (the settlement policy, ``settlement``):

    what happened                                       charge
    refused or failed before the upstream worked        nothing: the hold is released
    completed                                           the upstream's usage (clamped), else an estimate
    cut short (upstream broke, client left or stalled,  the upstream's usage if it arrived, else the prompt
      shutdown) after the upstream started              estimate + the output forwarded so far; partial
    the upstream accepted it, then timed out            at least the prompt estimate; partial, estimated
    the process crashed (``recovery_charge``)           prompt estimate (if it was sent) + checkpointed output
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from app.catalog import CatalogModel, Prices
from app.money.tokens import TokenUsage

log = logging.getLogger("seedgate.money")


@dataclass(frozen=True, slots=True)
class Quote:
    """The worst case a request may cost, decided before anything is sent upstream."""

    prompt_tokens: int  # the gateway's estimate
    max_output_tokens: int  # per choice; sent upstream as max_completion_tokens
    n: int
    prompt_cost: int  # prompt estimate at the dearer of the input prices, no margin
    hold: int  # what is reserved
    output_price: int  # units per output token, for recovery of checkpointed output
    capped_from: int | None = None  # the output cap before an affordable hold lowered it


def quote(model: CatalogModel, *, prompt_tokens: int, requested_output: int | None, n: int, margin: float) -> Quote:
    """The hold: prompt estimate (+margin) at the input price, plus the output cap x n at the output price.

    The output cap is the request's own, clamped to the model's; absent, the model's cap -- never a small
    guess, because it is sent upstream and bounds answer *and* reasoning on Ark, so the hold is a true
    worst case. Cached input may be cheaper, but the estimate cannot know what will hit the cache.
    """
    prices = model.prices
    prompt = min(prompt_tokens, model.context_window)
    max_output = min(requested_output or model.max_output_tokens, model.max_output_tokens)
    prompt_cost = prompt * max(prices.input, prices.cached_input)
    hold = int(prompt_cost * (1 + margin)) + max_output * n * prices.output
    return Quote(prompt, max_output, n, prompt_cost, hold, prices.output)


def _prompt_part(quote: Quote) -> int:
    return quote.hold - quote.max_output_tokens * quote.n * quote.output_price


def affordable(quote: Quote, room: int, *, min_output_tokens: int) -> Quote | None:
    """A smaller quote that ``room`` pays for, or None.

    When the balance cannot cover the worst case but covers the prompt and at least
    ``min_output_tokens`` of answer, lower the output cap to what it pays for instead of refusing:
    "hi" with Claude Code's ``max_tokens: 32000`` must work on a small balance. The lowered cap is
    sent upstream, so the hold stays a true worst case and the key can never overdraw.
    """
    per_token = quote.n * quote.output_price
    if per_token <= 0:
        return None  # free output: the hold is all prompt, lowering the cap cannot help
    tokens = (room - _prompt_part(quote)) // per_token
    if tokens < min_output_tokens or tokens >= quote.max_output_tokens:
        return None
    return replace(
        quote,
        max_output_tokens=tokens,
        hold=_prompt_part(quote) + tokens * per_token,
        capped_from=quote.max_output_tokens,
    )


def smallest_workable_balance(quote: Quote, *, min_output_tokens: int) -> int:
    """The balance below which even an affordable hold is refused (said in the 402 message)."""
    return _prompt_part(quote) + min(quote.max_output_tokens, min_output_tokens) * quote.n * quote.output_price


def cost(usage: TokenUsage, prices: Prices) -> int:
    """``(prompt - cached) * input + cached * cached_input + completion * output``.

    Reasoning tokens are already inside ``completion_tokens`` and are billed as output.
    """
    uncached = usage.prompt_tokens - usage.cached_tokens
    return uncached * prices.input + usage.cached_tokens * prices.cached_input + usage.completion_tokens * prices.output


def clamp_usage(usage: TokenUsage, *, context_window: int, quote: Quote) -> tuple[TokenUsage, bool]:
    """Upstream counts bounded by what the request could produce: ``(usage, anomalous)``.

    The prompt cannot exceed the context window, the answer cannot exceed the output cap sent
    upstream times ``n``; a lying or broken upstream (``completion_tokens: 10**19``) would otherwise
    overflow the columns and fail the settlement, or bill a key for tokens that cannot exist.
    """
    prompt = min(usage.prompt_tokens, context_window)
    completion = min(usage.completion_tokens, quote.max_output_tokens * quote.n)
    clamped = TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        reasoning_tokens=min(usage.reasoning_tokens, completion),
        cached_tokens=min(usage.cached_tokens, prompt),
    )
    return clamped, clamped != usage


@dataclass(slots=True)
class Outcome:
    """What happened to an admitted request, filled in as it runs (the relay updates it live)."""

    status: str = "ok"  # ok | upstream_error | upstream_timeout | client_disconnected | client_stalled | ...
    sent: bool = False  # the request went to the upstream (a crash after this is charged the prompt estimate)
    consumed: bool = False  # the upstream accepted the request and worked on it: it bills the operator
    complete: bool = False
    usage: TokenUsage | None = None  # as the upstream reported it
    output_tokens: int = 0  # counted from what was forwarded, for when usage never arrived

    def mark_sent(self, sent: bool) -> None:
        self.sent = sent


@dataclass(frozen=True, slots=True)
class Charge:
    usage: TokenUsage
    cost: int
    status: str
    partial: bool
    estimated: bool


def settlement(outcome: Outcome, quote: Quote, model: CatalogModel) -> Charge | None:
    """Charge or release (None), per the policy table in this module's docstring."""
    if not outcome.consumed and outcome.usage is None and outcome.output_tokens == 0:
        return None
    estimated = outcome.usage is None
    reported = outcome.usage or TokenUsage(prompt_tokens=quote.prompt_tokens, completion_tokens=outcome.output_tokens)
    usage, anomalous = clamp_usage(reported, context_window=model.context_window, quote=quote)
    if anomalous:
        log.warning("upstream usage out of bounds for %s, clamped: %s -> %s", model.id, reported, usage)
    return Charge(usage, cost(usage, model.prices), outcome.status, not outcome.complete, estimated)


def clamp_charge(cost: int, room: int) -> tuple[int, int]:
    """``(charged, shortfall)``: a cost above what the key has is charged down to zero, the rest recorded.

    Holds make this rare (only an answer dearer than its worst case, e.g. an upstream that ignored
    the output cap); a balance never goes negative.
    """
    charged = max(0, min(cost, room))
    return charged, cost - charged


def recovery_charge(*, sent: bool, prompt_cost: int, output_tokens: int, output_price: int) -> int:
    """What a hold left by a crashed process costs: nothing if it never reached the upstream, else the
    prompt estimate plus the output checkpointed while it streamed (at most ~1-2 s old)."""
    if not sent and output_tokens == 0:
        return 0
    return prompt_cost + output_tokens * output_price
