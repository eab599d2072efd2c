"""OpenAI-compatible endpoints: ``/v1/chat/completions`` and ``/v1/models``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.catalog import CatalogModel
from app.chat_request import ChatRequest, model_of, parse_chat_request
from app.dialects.openai_chat import OpenAIDialect
from app.errors import ModelNotFound
from app.inbound import CallDep, GatewayDep
from app.json import json_response
from app.pipeline import authenticate, check_ip
from app.relay import Dialect
from app.ticket import Ticket

router = APIRouter()


class OpenAIChat:
    endpoint = "chat.completions"

    def model_name(self, body: Any) -> str:
        return model_of(body)

    def parse(self, body: Any) -> ChatRequest:
        return parse_chat_request(body)

    def render(self, chat: dict[str, Any], raw: bytes, ticket: Ticket) -> bytes:
        return raw  # the upstream's answer goes out as it came, model id included

    def dialect(self, request: ChatRequest, ticket: Ticket) -> Dialect:
        return OpenAIDialect(include_usage=request.include_usage)


OPENAI_CHAT = OpenAIChat()  # served by app.asgi for POST /v1/chat/completions


def model_card(model: CatalogModel, *, anthropic: bool) -> dict[str, Any]:
    cfg = model.settings
    if anthropic:
        created = datetime.fromtimestamp(cfg.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"type": "model", "id": model.id, "display_name": model.id, "created_at": created}
    return {
        "id": model.id,
        "object": "model",
        "created": cfg.created,
        "owned_by": cfg.owned_by,
        "aliases": list(model.aliases),
        "context_window": model.context_window,
        "max_output_tokens": model.max_output_tokens,
        "pricing": {
            "currency": "USD",
            "unit": "per_million_tokens",
            "input": str(cfg.price.input),
            "output": str(cfg.price.output),
            "cached_input": str(cfg.price.cached_input if cfg.price.cached_input is not None else cfg.price.input),
        },
        "features": cfg.features,
    }


def _listed(gateway: Any) -> list[tuple[str, CatalogModel]]:
    """Every public id, plus ``claude-*`` aliases so Claude Code's model discovery can show them."""
    listed = []
    for model in gateway.catalog.models:
        listed.append((model.id, model))
        listed.extend((alias, model) for alias in model.aliases if alias.startswith(("claude", "anthropic")))
    return listed


@router.get("/v1/models")
async def list_models(request: Request, gateway: GatewayDep, call: CallDep) -> Response:
    await check_ip(gateway, call)
    await authenticate(gateway, call)
    anthropic = "anthropic-version" in request.headers
    cards = []
    for name, model in _listed(gateway):
        card = model_card(model, anthropic=anthropic)
        card["id"] = name
        if anthropic:
            card["display_name"] = name if name == model.id else f"{name} ({model.id})"
        cards.append(card)
    if anthropic:
        ids = [c["id"] for c in cards]
        body = {
            "data": cards,
            "has_more": False,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        }
        return json_response(body)
    return json_response({"object": "list", "data": cards})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, gateway: GatewayDep, call: CallDep) -> Response:
    await check_ip(gateway, call)
    await authenticate(gateway, call)
    model = gateway.catalog.resolve(model_id)
    if model is None:
        raise ModelNotFound(model_id)
    return json_response(model_card(model, anthropic="anthropic-version" in request.headers))
