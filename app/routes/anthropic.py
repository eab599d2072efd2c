"""Anthropic Messages endpoints for Claude Code: ``/v1/messages/count_tokens`` here; ``POST /v1/messages``
is served by ``app.asgi`` through ``app.dialects.anthropic.dialect``.

Query strings (Claude Code sends ``?beta=true``) and ``anthropic-beta`` headers are ignored; errors
leave in the Anthropic envelope (see ``app.main.wants_anthropic``).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.dialects.anthropic.tokens import estimate_input_tokens
from app.errors import InvalidRequest
from app.inbound import CallDep, GatewayDep
from app.json import json_response
from app.pipeline import authenticate, check_ip, parse_json

router = APIRouter()


@router.post("/v1/messages/count_tokens")
async def count_tokens(gateway: GatewayDep, call: CallDep) -> Response:
    await check_ip(gateway, call)
    await authenticate(gateway, call)
    body = parse_json(call.body)
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise InvalidRequest("messages: Field required", param="messages")
    return json_response({"input_tokens": estimate_input_tokens(body)})
