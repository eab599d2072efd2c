"""Dependency aliases for the FastAPI routes: signatures read like prose, resources come from the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import AuthenticationFailed
from app.inbound import Inbound
from app.keys import hmac_equal
from app.limits.checks import count_failed_guess, refuse_while_guessing
from app.services import Services


async def get_services(request: Request) -> Services:  # async: a sync dependency costs a thread hop
    services: Services = request.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_inbound(request: Request, services: ServicesDep) -> Inbound:
    inbound = Inbound.of(
        request.scope, request.receive, trusted=services.trusted, max_body_bytes=services.settings.server.max_body_bytes
    )
    request.state.client_ip = inbound.client_ip
    return inbound


InboundDep = Annotated[Inbound, Depends(get_inbound)]


async def require_admin(services: ServicesDep, inbound: InboundDep) -> None:
    """The master key; wrong guesses count against the address's per-IP limit (as at every sign-in)."""
    limits, limiter = services.settings.limits, services.limiter
    await refuse_while_guessing(limiter, limits, inbound.client_ip, rejected=services.metrics.limit_rejected)
    token = inbound.api_key or ""
    master = services.settings.admin.master_key.get_secret_value()
    if not master or not hmac_equal(token, master):
        await count_failed_guess(limiter, limits, inbound.client_ip)
        raise AuthenticationFailed("Admin endpoints need 'Authorization: Bearer <master key>'.")


AdminDep = Depends(require_admin)
