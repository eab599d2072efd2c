"""THE request flow. Only this module knows the order of the steps:

    per-IP limit -> auth -> resolve model + access -> validate -> per-key limits
    -> reserve money -> upstream call -> relay (stream) or answer -> settle (or release) -> log

Every step raises a ``GatewayError`` on refusal; the route's dialect renders it. Once money is
reserved, the ``Ticket`` guarantees exactly one settle-or-release on every path. The last steps
(answer or relay, then settle) are in ``app.answers``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from starlette.responses import Response

from app.answers import answer, record_policy, start_stream
from app.catalog import CatalogModel
from app.chat_request import ChatRequest
from app.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    RateLimited,
    ServiceUnavailable,
)
from app.keys import KeyRecord
from app.limits import ratelimit_headers
from app.money.tokens import estimate_prompt_tokens
from app.relay import Dialect
from app.services import Gateway
from app.ticket import Plan, Ticket
from app.upstream import (
    UpstreamFailure,
)

log = logging.getLogger("seedgate.request")


@dataclass(slots=True)
class Call:
    """What the route extracted from the HTTP request."""

    request_id: str
    client_ip: str
    api_key: str | None
    body: bytes
    started: float


class Frontend(Protocol):
    """One client-facing API (OpenAI chat completions, Anthropic messages) over the same flow."""

    endpoint: str

    def model_name(self, body: Any) -> str: ...
    def parse(self, body: Any) -> ChatRequest: ...
    def render(self, chat: dict[str, Any], raw: bytes, ticket: Ticket) -> bytes: ...
    def dialect(self, request: ChatRequest, ticket: Ticket) -> Dialect: ...


async def check_ip(gw: Gateway, call: Call) -> None:
    per_ip = gw.settings.limits.per_ip
    decision = await gw.limiter.hit(f"ip:{call.client_ip}", limit=per_ip.requests, window_seconds=per_ip.window_seconds)
    if not decision.allowed:
        raise RateLimited(
            "Too many requests from this address; slow down.",
            headers=ratelimit_headers(decision),
            fallback_suggestion=f"retry after {max(1, round(decision.retry_after))} seconds",
        )


async def authenticate(gw: Gateway, call: Call) -> KeyRecord:
    if not call.api_key:
        raise AuthenticationFailed("Missing API key. Send 'Authorization: Bearer sk-...' or 'x-api-key: sk-...'.")
    key = await gw.keys.lookup(call.api_key)
    if key is None:
        raise AuthenticationFailed("Invalid API key.")
    if key.revoked:
        raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
    if key.expired(datetime.now(UTC)):
        raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
    return key


def resolve_model(gw: Gateway, name: str, key: KeyRecord) -> CatalogModel:
    model = gw.catalog.resolve(name)
    if model is None:
        raise ModelNotFound(name)
    if key.models is not None and model.id not in key.models:
        raise ModelNotAllowed(f"This API key may not use the model '{model.id}'.", param="model")
    return model


def plan_request(gw: Gateway, model: CatalogModel, request: ChatRequest) -> Plan:
    prompt = min(estimate_prompt_tokens(request.body["messages"], request.body.get("tools")), model.context_window)
    max_output = min(request.max_output_tokens or model.max_output_tokens, model.max_output_tokens)
    margin = 1 + gw.settings.billing.prompt_margin
    prices = model.prices
    prompt_cost = prompt * max(prices.input, prices.cached_input)
    hold = int(prompt_cost * margin) + max_output * request.n * prices.output
    return Plan(prompt_tokens=prompt, max_output_tokens=max_output, hold_amount=hold, prompt_cost=prompt_cost)


async def limit_key(gw: Gateway, key: KeyRecord, plan: Plan) -> tuple[str, dict[str, str]]:
    """Per-key requests/min, tokens/min and concurrency; returns the concurrency bucket and headers."""
    defaults = gw.settings.limits.key_defaults
    tpm_limit = key.tpm or defaults.tpm
    if plan.prompt_tokens > tpm_limit:
        # it can never fit: tell the SDKs not to retry, and spend none of the key's request budget
        raise RateLimited(
            f"This request (~{plan.prompt_tokens} prompt tokens) exceeds the key's limit of {tpm_limit} tokens "
            "per minute.",
            code="request_exceeds_tpm",
            headers={"x-should-retry": "false"},
        )
    rpm = await gw.limiter.hit(f"rpm:{key.id}", limit=key.rpm or defaults.rpm, window_seconds=60)
    if not rpm.allowed:
        raise RateLimited("This key's requests-per-minute limit is reached.", headers=ratelimit_headers(rpm))
    tpm = await gw.limiter.hit(f"tpm:{key.id}", limit=tpm_limit, window_seconds=60, cost=plan.prompt_tokens)
    if not tpm.allowed:
        raise RateLimited("This key's tokens-per-minute limit is reached.", headers=ratelimit_headers(tpm))
    bucket = f"conc:{key.id}"
    limit = key.max_concurrent or defaults.max_concurrent
    if not await gw.limiter.acquire(bucket, limit=limit, ttl_seconds=gw.settings.billing.hold_ttl_seconds):
        raise RateLimited(f"This key already has {limit} requests running.", headers={"retry-after": "1"})
    headers = {
        "x-ratelimit-limit-requests": str(rpm.limit),
        "x-ratelimit-remaining-requests": str(rpm.remaining),
        "x-ratelimit-limit-tokens": str(tpm.limit),
        "x-ratelimit-remaining-tokens": str(tpm.remaining),
    }
    return bucket, headers


def upstream_body(request: ChatRequest, model: CatalogModel, plan: Plan) -> dict[str, Any]:
    body = dict(request.body)  # "model" is set per target by the router
    # max_completion_tokens bounds answer AND reasoning on Ark, so the hold is a true worst case
    body["max_completion_tokens"] = plan.max_output_tokens
    if request.n != 1:
        body["n"] = request.n
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def handle_chat(gw: Gateway, call: Call, frontend: Frontend) -> Response:
    if gw.lifecycle.draining:
        raise ServiceUnavailable("The gateway is shutting down; retry on another instance.")
    await check_ip(gw, call)
    key = await authenticate(gw, call)
    body = parse_json(call.body)
    model = resolve_model(gw, frontend.model_name(body), key)
    request = frontend.parse(body)
    plan = plan_request(gw, model, request)
    bucket, headers = await limit_key(gw, key, plan)
    gw.lifecycle.enter()
    ticket = Ticket(gw, call.request_id, key, model, plan, frontend.endpoint, request.stream, call.started)
    ticket.concurrency_bucket = bucket
    headers["x-request-id"] = call.request_id
    try:
        ticket.hold = await gw.ledger.reserve(
            key_id=key.id,
            request_id=call.request_id,
            model=model.id,
            amount=plan.hold_amount,
            prompt_tokens_estimate=plan.prompt_tokens,
            prompt_cost_estimate=plan.prompt_cost,
        )
        deadline = asyncio.get_running_loop().time() + total_timeout(gw, model)
        body = upstream_body(request, model, plan)
        ticket.target, response, attempts = await gw.router.open(model, lambda _target: body, deadline=deadline)
        if attempts > 1:
            headers["x-seedgate-attempts"] = str(attempts)
        if request.stream:
            return await start_stream(ticket, response, frontend.dialect(request, ticket), headers, deadline)
        return await answer(ticket, response, frontend, headers, deadline)
    except UpstreamFailure as failure:
        if failure.policy:
            await record_policy(gw, ticket, failure.upstream_code)
        await asyncio.shield(ticket.abort(f"upstream {failure.upstream_status or failure.error.status}"))
        raise failure.error from None
    except BaseException as exc:
        await asyncio.shield(ticket.abort(type(exc).__name__))
        raise


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None


def total_timeout(gw: Gateway, model: CatalogModel) -> float:
    first = model.targets[0]
    return first.total_timeout or gw.upstreams[first.upstream].settings.total_timeout
