"""THE request flow of every billed request, top to bottom. Only this module knows the order:

    per-IP limit -> auth -> body -> model + access -> validate -> quote -> per-key limits
    -> reserve money (an affordable hold if the worst case is too dear) -> upstream (failover)
    -> whole answer, or relayed stream -> settle or release -> limits and in-flight slot given back

Each step is one call into the module that owns its rule; a refusal is a ``GatewayError`` that
``app.asgi`` renders in the dialect's envelope. From the reservation on, an ``Admission`` holds what
the request took (money hold, concurrency slot, tokens/min estimate, in-flight slot), and
``settle`` gives all of it back exactly once, on every path: answered, refused by the upstream,
cut by either side, cancelled. Its ``outcome`` -- filled in by this module and by the relay --
decides between charge and release (``app.money.rules.settlement``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from app.catalog import CatalogModel, Target
from app.chat_request import ChatRequest
from app.dialects import Dialect, Reply
from app.errors import (
    AuthenticationFailed,
    GatewayError,
    InsufficientBalance,
    MonthlyQuotaExceeded,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    request_id_headers,
)
from app.inbound import Inbound
from app.json import loads_upstream, parse_request_json
from app.keys import KeyRecord, authenticate
from app.limits.checks import check_ip, limit_key, release_key
from app.money import rules
from app.money.ledger import utcnow
from app.money.records import Hold, Refusal, UsageRow
from app.money.tokens import TokenUsage, answer_output_tokens, estimate_prompt_tokens
from app.money.units import units_to_usd
from app.outbound import AnswerResponse, RelayResponse
from app.relay import Relay, UpstreamEvents
from app.services import Services
from app.upstream import UpstreamFailure, UpstreamReadError, UpstreamReadTimeout, UpstreamResponse, classify_error
from app.upstream_errors import record_upstream_error
from app.usage import record_policy_event

log = logging.getLogger("seedgate.request")

MAX_ANSWER_BYTES = 64 * 1024 * 1024  # a non-stream answer larger than this is refused as broken


@dataclass(slots=True)
class Admission:
    """What an admitted request holds until ``settle`` gives it back."""

    inbound: Inbound
    key: KeyRecord
    model: CatalogModel
    endpoint: str
    stream: bool
    quote: rules.Quote
    hold: Hold | None = None
    target: Target | None = None
    outcome: rules.Outcome = field(default_factory=rules.Outcome)
    ended: bool = False


async def handle(services: Services, inbound: Inbound, dialect: Dialect) -> Response:
    settings = services.settings
    if services.lifecycle.draining:
        raise ServiceUnavailable("The gateway is shutting down; retry on another instance.")
    metrics = services.metrics
    await check_ip(services.limiter, settings.limits, inbound.client_ip, rejected=metrics.limit_rejected)
    key = await authenticate(services.keys, inbound.api_key)
    inbound.record.key_id = key.id
    body = parse_json(await inbound.body())
    model = services.catalog.for_key(dialect.model_name(body), key.models)
    inbound.record.model = model.id
    loading = dialect_load(dialect, body, key.id)  # server-side state the body refers to, if any
    if loading is not None:
        body = await loading
    request = dialect.parse(body)
    inbound.record.stream = request.stream
    prompt_tokens = estimate_prompt_tokens(request.body["messages"], request.body.get("tools"))
    quote = rules.quote(
        model,
        prompt_tokens=prompt_tokens,
        requested_output=request.max_output_tokens,
        n=request.n,
        margin=settings.billing.prompt_margin,
    )
    deadline = asyncio.get_running_loop().time() + total_timeout(services, model)
    slot_ttl = total_timeout(services, model) + settings.server.shutdown_grace_seconds + 60
    headers = await limit_key(
        services.limiter,
        key,
        settings.limits.key_defaults,
        prompt_tokens=quote.prompt_tokens,
        slot_ttl=slot_ttl,
        rejected=metrics.limit_rejected,
    )
    headers.update(request_id_headers(dialect.envelope, inbound.request_id))
    headers.update(request.response_headers)
    services.lifecycle.enter()
    admission = Admission(inbound, key, model, dialect.endpoint, request.stream, quote)
    try:
        await reserve(services, admission)
        if admission.quote.capped_from is not None:
            headers["x-seedgate-max-tokens-capped"] = str(admission.quote.max_output_tokens)
        upstream_request = upstream_body(request, admission.quote)
        admission.target, response, attempts = await services.router.open(
            model, upstream_request, deadline=deadline, sending=admission.outcome.mark_sent
        )
        if attempts > 1:
            headers["x-seedgate-attempts"] = str(attempts)
        if request.stream:
            return await relay_stream(services, admission, dialect, request, response, headers, deadline)
        return await whole_answer(services, admission, dialect, request, response, headers, deadline)
    except UpstreamFailure as failure:
        admission.outcome.status = f"upstream_{failure.upstream_status or failure.error.status}"
        admission.outcome.consumed = failure.accepted
        try:  # the records are the operator's; the settlement runs even if the task is cancelled meanwhile
            if failure.policy:
                await record_policy(services, admission, failure.upstream_code)
            if failure.upstream_status is not None:
                await record_upstream_refusal(services, admission, failure)
        finally:
            await asyncio.shield(settle(services, admission))
        raise failure.error from None
    except BaseException:
        if admission.outcome.status == "ok":
            admission.outcome.status = "failed"
        await asyncio.shield(settle(services, admission))
        raise


async def reserve(services: Services, admission: Admission) -> None:
    """Reserve the quote's worst case; if the key cannot cover it, an affordable smaller one; else refuse."""
    min_output = services.settings.billing.min_affordable_output_tokens
    refusal = await reserve_owned(services, admission)
    if refusal is not None and refusal.reason != "key":
        capped = rules.affordable(admission.quote, refusal.room, min_output_tokens=min_output)
        if capped is not None:
            admission.quote = capped
            refusal = await reserve_owned(services, admission)
    if refusal is not None:
        raise refused(refusal, admission.quote, min_output)


async def reserve_owned(services: Services, admission: Admission) -> Refusal | None:
    """One reservation of the admission's quote; once made, the admission owns the hold (``settle`` gives
    it back). A request cancelled while the write runs (a shutdown while the database is locked) owns it
    too: the write may still commit -- the SQLite writer runs it, then the release queued behind it --
    and a hold left to lapse would be recovered as if the request had gone upstream."""
    hold = hold_for(admission)
    try:
        refusal = await services.ledger.reserve(hold)
    except asyncio.CancelledError:
        admission.hold = hold
        raise
    if refusal is None:
        admission.hold = hold
        services.leases.add(admission.inbound.request_id, admission.outcome, utcnow())
    return refusal


def hold_for(admission: Admission) -> Hold:
    quote = admission.quote
    return Hold(
        request_id=admission.inbound.request_id,
        key_id=admission.key.id,
        model=admission.model.id,
        amount=quote.hold,
        prompt_tokens_estimate=quote.prompt_tokens,
        prompt_cost_estimate=quote.prompt_cost,
        output_price=quote.output_price,
    )


def refused(refusal: Refusal, quote: rules.Quote, min_output: int) -> GatewayError:
    if refusal.reason == "key":
        return AuthenticationFailed("Invalid API key.")
    if refusal.reason == "quota":
        return MonthlyQuotaExceeded()
    smallest = rules.smallest_workable_balance(quote, min_output_tokens=min_output)
    return InsufficientBalance(
        f"Insufficient balance: this request needs at least ${units_to_usd(smallest)} available "
        f"(up to ${units_to_usd(quote.hold)} for its full max_tokens) and the key has "
        f"${units_to_usd(refusal.available)}. Top up or lower max_tokens.",
        fallback_suggestion="top up the balance or lower max_tokens",
    )


def upstream_body(request: ChatRequest, quote: rules.Quote) -> dict[str, Any]:
    body = dict(request.body)  # "model" is set per target by the router
    # max_completion_tokens bounds answer AND reasoning on Ark, so the hold is a true worst case
    body["max_completion_tokens"] = quote.max_output_tokens
    if request.n != 1:
        body["n"] = request.n
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def whole_answer(
    services: Services,
    admission: Admission,
    dialect: Dialect,
    request: ChatRequest,
    response: UpstreamResponse,
    headers: dict[str, str],
    deadline: float,
) -> Response:
    """Read the whole upstream answer (bounded), render it, send it, then settle."""
    outcome = admission.outcome
    outcome.consumed = True  # the upstream answered: it bills the operator whatever happens next
    try:
        async with asyncio.timeout_at(deadline):
            raw = await read_bounded(response, MAX_ANSWER_BYTES)
    except (TimeoutError, UpstreamReadTimeout):
        outcome.status = "upstream_timeout"
        raise UpstreamTimeout("The upstream service timed out.") from None
    except UpstreamReadError:
        outcome.status = "upstream_error"
        raise UpstreamError("The upstream connection broke while reading the answer.") from None
    except UpstreamError:  # larger than the gateway accepts
        outcome.status = "upstream_error"
        raise
    finally:
        await response.aclose()
    answer = parse_answer(admission, raw)
    outcome.usage = TokenUsage.from_openai(answer.get("usage"))
    outcome.output_tokens = answer_output_tokens(answer["choices"])
    outcome.complete = True
    if outcome.usage is None:  # the upstream gave none: a translated answer shows the estimate it is billed
        prompt, completion = admission.quote.prompt_tokens, outcome.output_tokens
        answer["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    body = dialect.render(answer, raw, reply_for(admission, request))
    if (finish := dialect_finish(dialect, request, admission)) is not None:
        await finish()  # e.g. stored before the client can chain to it
    policy = policy_hit(answer)

    async def then() -> None:
        await settle(services, admission)
        if policy:
            await record_policy(services, admission, "content_filter")

    # the client gets its answer first; the settlement follows in the same task, shielded
    return AnswerResponse(
        body, headers=headers, then=then, write_timeout=services.settings.server.client_write_timeout_seconds
    )


async def relay_stream(
    services: Services,
    admission: Admission,
    dialect: Dialect,
    request: ChatRequest,
    response: UpstreamResponse,
    headers: dict[str, str],
    deadline: float,
) -> Response:
    """Wait for the upstream's first event (an error before it is still an HTTP status), then relay."""
    server = services.settings.server
    events = UpstreamEvents(response, deadline=deadline)
    relay = Relay(
        events,
        dialect.stream(request, reply_for(admission, request)),
        admission.outcome,
        heartbeat_interval=server.heartbeat_seconds,
        on_complete=dialect_finish(dialect, request, admission),  # before the stream's last bytes
    )
    try:
        error = await relay.prime()
    except BaseException:
        # the client left (or the task was cancelled) while the upstream, which accepted the request
        # with a 200, was working on the prompt: like a timeout after acceptance, the prompt estimate
        admission.outcome.status, admission.outcome.consumed = "client_disconnected", True
        await asyncio.shield(events.aclose())
        raise
    if error is not None:
        await events.aclose()
        admission.outcome.status = "upstream_timeout" if isinstance(error, UpstreamTimeout) else "upstream_error"
        admission.outcome.consumed = isinstance(error, UpstreamTimeout)  # it had the request, and kept it
        raise error
    admission.inbound.record.first_token_at = time.perf_counter()  # seedgate_time_to_first_token_seconds

    return RelayResponse(
        relay,
        headers=headers,
        then=lambda: settle(services, admission),
        write_timeout=server.client_write_timeout_seconds,
        open_streams=services.metrics.open_streams,
    )


async def settle(services: Services, admission: Admission) -> None:
    """Charge or release the hold, exactly once; then give back the limits and the in-flight slot."""
    if admission.ended:
        return
    admission.ended = True
    record = admission.inbound.record
    tokens_used = 0
    try:
        charge = rules.settlement(admission.outcome, admission.quote, admission.model)
        if admission.hold is not None and charge is None:
            await services.ledger.release(admission.hold)
        elif admission.hold is not None and charge is not None:
            settled = await services.ledger.settle(admission.hold, usage_row(admission, charge))
            tokens_used = charge.usage.prompt_tokens + charge.usage.completion_tokens
            record.prompt_tokens, record.completion_tokens = charge.usage.prompt_tokens, charge.usage.completion_tokens
            record.cost = settled.charged if settled is not None else 0
            services.alerts.notice(admission.key.id)  # low-balance check, off the request's path
            if settled is not None:
                services.metrics.charged(admission.model.id, charge.usage, settled.charged)
    finally:
        services.leases.remove(admission.inbound.request_id)
        try:
            await release_key(
                services.limiter,
                admission.key.id,
                tokens_estimated=admission.quote.prompt_tokens,
                tokens_used=tokens_used,
            )
        finally:
            services.lifecycle.leave()


def usage_row(admission: Admission, charge: rules.Charge) -> UsageRow:
    target = admission.target
    return UsageRow(
        request_id=admission.inbound.request_id,
        key_id=admission.key.id,
        model=admission.model.id,
        upstream=target.upstream if target else None,
        upstream_model=target.upstream_model if target else None,
        endpoint=admission.endpoint,
        stream=admission.stream,
        prompt_tokens=charge.usage.prompt_tokens,
        completion_tokens=charge.usage.completion_tokens,
        reasoning_tokens=charge.usage.reasoning_tokens,
        cached_tokens=charge.usage.cached_tokens,
        cost=charge.cost,
        shortfall=0,
        status=charge.status,
        partial=charge.partial,
        estimated=charge.estimated,
        source="request",
        latency_ms=int((time.perf_counter() - admission.inbound.started) * 1000),
        created_at=utcnow(),
    )


def reply_for(admission: Admission, request: ChatRequest) -> Reply:
    return Reply(admission.inbound.request_id, admission.model.id, admission.quote.prompt_tokens, request.context)


# -- optional dialect hooks (app.dialects): server-side state before parsing, once the answer is complete


def dialect_load(dialect: Dialect, body: Any, key_id: str) -> Awaitable[Any] | None:
    """The dialect's loading of server-side state for this body, to await for the body to parse; None
    when there is nothing to load (no coroutine made, nothing awaited)."""
    load = getattr(dialect, "load", None)
    return None if load is None else load(body, key_id)


def dialect_finish(
    dialect: Dialect, request: ChatRequest, admission: Admission
) -> Callable[[], Awaitable[None]] | None:
    """The dialect's work to await once the answer is complete, before its last bytes go out (a stored
    Responses answer: there before the client can chain to it); None when there is none for this
    request. A failure is logged, never the client's."""
    on_complete = getattr(dialect, "on_complete", None)
    work = None if on_complete is None else on_complete(request, admission.key.id)
    if work is None:
        return None

    async def run() -> None:
        try:
            await work()
        except Exception:
            log.exception("the %s dialect could not finish request %s", dialect.endpoint, admission.inbound.request_id)

    return run


def parse_json(raw: bytes) -> Any:
    return parse_request_json(raw)  # not JSON, or nested deeper than app.json allows: 400


def parse_answer(admission: Admission, raw: bytes) -> dict[str, Any]:
    """A chat completion, or the upstream's failure (an unreadable 200 costs the key nothing)."""
    try:
        answer = loads_upstream(raw)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("choices"), list):
        return answer
    admission.outcome.status, admission.outcome.consumed = "upstream_error", False
    if isinstance(answer, dict) and "error" in answer:
        raise classify_error(admission.target.upstream if admission.target else "?", 500, raw)
    raise UpstreamError("The upstream service sent an unreadable answer.")


async def read_bounded(response: UpstreamResponse, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) > limit:
            raise UpstreamError("The upstream answer is larger than the gateway accepts.")
    return bytes(buf)


def policy_hit(answer: dict[str, Any]) -> bool:
    return any(
        isinstance(choice, dict)
        and (choice.get("finish_reason") == "content_filter" or choice.get("moderation_hit_type"))
        for choice in answer["choices"]
    )


async def record_policy(services: Services, admission: Admission, code: str | None) -> None:
    try:
        await record_policy_event(
            services.db,
            request_id=admission.inbound.request_id,
            key_id=admission.key.id,
            model=admission.model.id,
            code=code,
            message=None,
        )
    except Exception:
        # a lost audit row must not turn the client's answer into a 500
        log.exception("could not record policy event")


async def record_upstream_refusal(services: Services, admission: Admission, failure: UpstreamFailure) -> None:
    """The upstream's own words, for the operator only (issue 11): the log line and ``upstream_errors``."""
    log.warning(
        "request %s: upstream %s answered HTTP %s: %s",
        admission.inbound.request_id,
        failure.upstream_name,
        failure.upstream_status,
        failure.upstream_message,
    )
    try:
        await record_upstream_error(
            services.db,
            request_id=admission.inbound.request_id,
            key_id=admission.key.id,
            model=admission.model.id,
            upstream=failure.upstream_name,
            status=failure.upstream_status,
            code=failure.upstream_code,
            message=failure.upstream_message,
            keep=services.settings.logging.upstream_errors_kept,
        )
    except Exception:
        log.exception("could not record upstream error")  # the client's answer must not become a 500


def total_timeout(services: Services, model: CatalogModel) -> float:
    first = model.targets[0]
    return first.total_timeout or services.upstreams[first.upstream].settings.total_timeout
