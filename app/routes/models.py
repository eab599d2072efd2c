"""``GET /v1/models`` and ``GET /v1/models/{id}``, in the OpenAI shape or, with ``anthropic-version``, Anthropic's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.catalog import CatalogModel, is_pattern
from app.errors import ModelNotFound
from app.json import json_response
from app.keys import authenticate
from app.limits.checks import check_ip
from app.routes.deps import InboundDep, ServicesDep

router = APIRouter()


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


def _listed(services: ServicesDep) -> list[tuple[str, CatalogModel]]:
    """Every public id, plus ``claude-*`` aliases so Claude Code's model discovery can show them (patterns
    such as ``claude-*opus*`` are not names a client could pick, so they are not listed)."""
    listed = []
    for model in services.catalog.models:
        listed.append((model.id, model))
        listed.extend(
            (alias, model)
            for alias in model.aliases
            if alias.startswith(("claude", "anthropic")) and not is_pattern(alias)
        )
    return listed


@router.get("/v1/models")
async def list_models(request: Request, services: ServicesDep, inbound: InboundDep) -> Response:
    await check_ip(services.limiter, services.settings.limits, inbound.client_ip)
    await authenticate(services.keys, inbound.api_key)
    anthropic = "anthropic-version" in request.headers
    cards = []
    for name, model in _listed(services):
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
async def get_model(model_id: str, request: Request, services: ServicesDep, inbound: InboundDep) -> Response:
    await check_ip(services.limiter, services.settings.limits, inbound.client_ip)
    await authenticate(services.keys, inbound.api_key)
    model = services.catalog.resolve(model_id)
    if model is None:
        raise ModelNotFound(model_id)
    return json_response(model_card(model, anthropic="anthropic-version" in request.headers))
