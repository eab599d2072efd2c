"""Anthropic Messages endpoints for Claude Code: ``/v1/messages`` and ``/v1/messages/count_tokens``.

Query strings (Claude Code sends ``?beta=true``) and ``anthropic-beta`` headers are ignored; errors
leave in the Anthropic envelope (see ``app.main.wants_anthropic``).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.anthropic.frontend import AnthropicMessages, Signer
from app.anthropic.tokens import estimate_input_tokens
from app.deps import CallDep, GatewayDep
from app.errors import InvalidRequest
from app.gateway import Gateway
from app.json import json_response
from app.pipeline import authenticate, check_ip, handle_chat, parse_json

router = APIRouter()


def _frontend(gateway: Gateway) -> AnthropicMessages:
    frontend = gateway.extensions.get("anthropic")
    if frontend is None:
        frontend = AnthropicMessages(Signer(gateway.settings.admin.master_key.get_secret_value()))
        gateway.extensions["anthropic"] = frontend
    if not isinstance(frontend, AnthropicMessages):
        raise TypeError("anthropic frontend slot holds something else")
    return frontend


@router.post("/v1/messages")
async def create_message(gateway: GatewayDep, call: CallDep) -> Response:
    return await handle_chat(gateway, call, _frontend(gateway))


@router.post("/v1/messages/count_tokens")
async def count_tokens(gateway: GatewayDep, call: CallDep) -> Response:
    await check_ip(gateway, call)
    await authenticate(gateway, call)
    body = parse_json(call.body)
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise InvalidRequest("messages: Field required", param="messages")
    return json_response({"input_tokens": estimate_input_tokens(body)})
