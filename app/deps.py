"""Dependency aliases: route signatures read like prose, resources come from the lifespan."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from app.clientip import client_ip
from app.errors import AuthenticationFailed
from app.gateway import Gateway
from app.keys import hmac_equal
from app.pipeline import Call


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def api_key_of(request: Request) -> str | None:
    """``Authorization: Bearer`` (OpenAI, ANTHROPIC_AUTH_TOKEN) or ``x-api-key`` (ANTHROPIC_API_KEY)."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


def peer_ip(request: Request, gateway: Gateway) -> str:
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.getlist("x-forwarded-for"), gateway.trusted)


async def get_call(request: Request, gateway: GatewayDep) -> Call:
    body = await request.body()
    return Call(request.state.request_id, peer_ip(request, gateway), api_key_of(request), body, time.perf_counter())


CallDep = Annotated[Call, Depends(get_call)]


def require_admin(request: Request, gateway: GatewayDep) -> None:
    token = api_key_of(request) or ""
    master = gateway.settings.admin.master_key.get_secret_value()
    if not master or not hmac_equal(token, master):
        raise AuthenticationFailed("Admin endpoints need 'Authorization: Bearer <master key>'.")


AdminDep = Depends(require_admin)
