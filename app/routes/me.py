"""The key holder's page ``/me``: paste the key into a form (never a URL), see balance, limits and a chart."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.console import pages, sessions
from app.console.forms import forbidden, read_form, secure
from app.console.render import page
from app.errors import AuthenticationFailed
from app.keys import authenticate
from app.limits.checks import check_ip
from app.routes.deps import InboundDep, ServicesDep

router = APIRouter()


def _me_page(request: Request, context: dict[str, Any], status: int = 200) -> Response:
    form_token = request.cookies.get(sessions.FORM_COOKIE) or sessions.new_form_token()
    response = page("me.html", {"title": "Your key", "csrf": form_token, "signed_in": False, **context}, status=status)
    response.set_cookie(sessions.FORM_COOKIE, form_token, httponly=True, samesite="strict", secure=secure(request))
    return response


@router.get("/me")
async def me_form(request: Request) -> Response:
    return _me_page(request, {})


@router.post("/me")
async def me(request: Request, services: ServicesDep, inbound: InboundDep) -> Response:
    """The key comes in the form body (never the URL), is used for this answer only and not echoed."""
    await check_ip(services.limiter, services.settings.limits, inbound.client_ip)
    form = await read_form(request)
    cookie = request.cookies.get(sessions.FORM_COOKIE)
    if not cookie or form.get("csrf") != cookie:
        return forbidden()
    try:
        key = await authenticate(services.keys, form.get("key", "").strip())
    except AuthenticationFailed as exc:
        return _me_page(request, {"error": exc.message}, status=401)
    await services.ledger.flush()
    return _me_page(request, await pages.me_page(services, key.id))
