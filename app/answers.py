"""The last steps of the flow: turn an accepted upstream response into the client's answer.

``answer`` reads a whole JSON answer (bounded by size and the deadline) and lets it out before the
settlement, which ``SettleAfterResponse`` runs right after the last byte; ``start_stream`` waits for
the upstream's first event, so an error before it can still become an HTTP status, then hands the
ticket to the relay, which settles when the stream ends however it ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from app.errors import UpstreamError, UpstreamTimeout
from app.money.tokens import TokenUsage, text_tokens
from app.outbound import RelayResponse, SettleAfterResponse
from app.relay import Dialect, Relay, UpstreamEvents
from app.services import Gateway
from app.ticket import Ticket
from app.upstream import UpstreamReadError, UpstreamReadTimeout, UpstreamResponse, classify_error
from app.usage import record_policy_event

if TYPE_CHECKING:
    from app.pipeline import Frontend

log = logging.getLogger("seedgate.request")

MAX_ANSWER_BYTES = 64 * 1024 * 1024  # a non-stream answer larger than this is refused as broken


async def answer(
    ticket: Ticket, response: UpstreamResponse, frontend: Frontend, headers: dict[str, str], deadline: float
) -> Response:
    """Non-stream: read the whole upstream answer (bounded), settle, then reply."""
    try:
        async with asyncio.timeout_at(deadline):
            raw = await read_bounded(response, MAX_ANSWER_BYTES)
    except (TimeoutError, UpstreamReadTimeout):
        raise UpstreamTimeout("The upstream service timed out.") from None
    except UpstreamReadError:
        raise UpstreamError("The upstream connection broke while reading the answer.") from None
    finally:
        await response.aclose()
    try:
        chat = orjson.loads(raw)
    except orjson.JSONDecodeError:
        chat = None
    if not isinstance(chat, dict) or not isinstance(chat.get("choices"), list):
        if isinstance(chat, dict) and "error" in chat:
            raise classify_error(ticket.target.upstream if ticket.target else "?", 500, raw)
        raise UpstreamError("The upstream service sent an unreadable answer.")
    usage = TokenUsage.from_openai(chat.get("usage"))
    output_tokens = _answer_tokens(chat)

    async def settle() -> None:
        await ticket.finish(usage, status="ok", partial=False, output_tokens=output_tokens)
        if _policy_hit(chat):
            await record_policy(ticket.gw, ticket, "content_filter")

    try:
        body = frontend.render(chat, raw, ticket)
    except BaseException:
        await asyncio.shield(settle())  # the upstream did the work: charge it even if rendering fails
        raise
    # the client gets its answer first; the settlement follows in the same task, shielded
    return SettleAfterResponse(body, headers=headers, settle=settle)


async def start_stream(
    ticket: Ticket, response: UpstreamResponse, dialect: Dialect, headers: dict[str, str], deadline: float
) -> Response:
    """Stream: wait for the upstream's first event, then hand the ticket to the relay."""
    events = UpstreamEvents(response, deadline=deadline)

    async def on_finish(outcome: Any) -> None:
        consumed = outcome.usage is not None or outcome.output_tokens > 0 or outcome.status == "client_disconnected"
        if outcome.complete or consumed:
            await ticket.finish(
                outcome.usage, status=outcome.status, partial=not outcome.complete, output_tokens=outcome.output_tokens
            )
        else:
            await ticket.abort(outcome.status)

    heartbeat = ticket.gw.settings.server.heartbeat_seconds
    relay = Relay(events, dialect, on_finish=on_finish, heartbeat_interval=heartbeat)
    try:
        error = await relay.prime()
    except BaseException:
        await asyncio.shield(events.aclose())
        raise
    if error is not None:
        await events.aclose()
        raise error
    return RelayResponse(relay, headers=headers)


async def read_bounded(response: UpstreamResponse, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) > limit:
            raise UpstreamError("The upstream answer is larger than the gateway accepts.")
    return bytes(buf)


def _answer_tokens(chat: dict[str, Any]) -> int:
    total = 0
    for choice in chat.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            for field in ("content", "reasoning_content"):
                if isinstance(message.get(field), str):
                    total += text_tokens(message[field])
    return total


def _policy_hit(chat: dict[str, Any]) -> bool:
    for choice in chat.get("choices") or ():
        if isinstance(choice, dict) and (
            choice.get("finish_reason") == "content_filter" or choice.get("moderation_hit_type")
        ):
            return True
    return False


async def record_policy(gw: Gateway, ticket: Ticket, code: str | None) -> None:
    try:
        await record_policy_event(
            gw.db, request_id=ticket.request_id, key_id=ticket.key.id, model=ticket.model.id, code=code, message=None
        )
    except Exception:
        # a lost audit row must not turn the client's answer into a 500
        log.exception("could not record policy event")
