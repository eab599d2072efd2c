"""``POST /v1/messages/count_tokens`` for Claude Code (``POST /v1/messages`` is a billed endpoint:
``app.asgi`` -> ``app.pipeline`` with ``app.dialects.anthropic``).

Query strings (Claude Code sends ``?beta=true``) and ``anthropic-beta`` headers are ignored; errors
leave in the Anthropic envelope (``app.errors.envelope_for``).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.dialects.anthropic.tokens import estimate_input_tokens
from app.errors import InvalidRequest
from app.json import json_response
from app.keys import authenticate
from app.limits.checks import check_ip
from app.pipeline import parse_json
from app.routes.deps import InboundDep, ServicesDep

router = APIRouter()


@router.post("/v1/messages/count_tokens")
async def count_tokens(services: ServicesDep, inbound: InboundDep) -> Response:
    await check_ip(services.limiter, services.settings.limits, inbound.client_ip)
    await authenticate(services.keys, inbound.api_key)
    body = parse_json(await inbound.body())
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise InvalidRequest("messages: Field required", param="messages")
    return json_response({"input_tokens": estimate_input_tokens(body)})
