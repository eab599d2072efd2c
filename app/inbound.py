"""Dependency aliases: route signatures read like prose, resources come from the lifespan."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers

from app.clientip import client_ip
from app.errors import AuthenticationFailed
from app.keys import hmac_equal
from app.pipeline import Call
from app.services import Gateway


async def get_gateway(request: Request) -> Gateway:  # async: a sync dependency costs a thread hop
    gateway: Gateway = request.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def api_key_of(headers: Headers) -> str | None:
    """``Authorization: Bearer`` (OpenAI, ANTHROPIC_AUTH_TOKEN) or ``x-api-key`` (ANTHROPIC_API_KEY)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


def peer_ip(client: tuple[str, int] | None, headers: Headers, gateway: Gateway) -> str:
    return client_ip(client[0] if client else None, headers.getlist("x-forwarded-for"), gateway.trusted)


async def get_call(request: Request, gateway: GatewayDep) -> Call:
    body = await request.body()
    ip = peer_ip(request.scope.get("client"), request.headers, gateway)
    return Call(request.state.request_id, ip, api_key_of(request.headers), body, time.perf_counter())


CallDep = Annotated[Call, Depends(get_call)]


async def require_admin(request: Request, gateway: GatewayDep) -> None:
    token = api_key_of(request.headers) or ""
    master = gateway.settings.admin.master_key.get_secret_value()
    if not master or not hmac_equal(token, master):
        raise AuthenticationFailed("Admin endpoints need 'Authorization: Bearer <master key>'.")


AdminDep = Depends(require_admin)
