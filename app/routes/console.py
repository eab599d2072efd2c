"""The console's routes (``/console``) and the key holder's ``/me`` page; rules in ``app.console``.

GET pages need a signed-in session (else a redirect to the sign-in page); every POST also needs the
form's CSRF token (else 403). Bad form input re-renders the page with the error in place (400).
The key holder's ``/me`` is in ``app.routes.me``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response, StreamingResponse

from app import accounts, alerts
from app.accounts import AccountError, KeyCreate, KeyUpdate, TopUp
from app.console import pages, sessions
from app.console.forms import (
    Form,
    FormError,
    first_error,
    forbidden,
    printable,
    read_form,
    secure,
    settings_fields,
    usd_field,
)
from app.console.queries import search_keys
from app.console.render import STATIC_TYPES, page, static_file
from app.errors import NotFound
from app.limits.checks import check_ip
from app.money.units import MoneyError, usd_to_units
from app.routes.deps import InboundDep, ServicesDep
from app.usage import UsageFilter, usage_csv

router = APIRouter()


async def _session(request: Request, services: ServicesDep) -> str | None:
    token = request.cookies.get(sessions.SESSION_COOKIE)
    master = services.settings.admin.master_key.get_secret_value()
    return token if await sessions.valid(services.db, token, master) else None


def _to_login() -> Response:
    return RedirectResponse("/console/login", status_code=303)


def _base(token: str, active: str, title: str) -> dict[str, Any]:
    return {"csrf": sessions.csrf_for(token), "active": active, "title": title, "signed_in": True}


# --- signing in and out -----------------------------------------------------------------------------


def _login_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    form_token = request.cookies.get(sessions.FORM_COOKIE) or sessions.new_form_token()
    response = page("login.html", {"title": "Sign in", "csrf": form_token, "error": error}, status=status)
    response.set_cookie(sessions.FORM_COOKIE, form_token, httponly=True, samesite="strict", secure=secure(request))
    return response


@router.get("/console/login")
async def login_form(request: Request, services: ServicesDep) -> Response:
    if await _session(request, services):
        return RedirectResponse("/console", status_code=303)
    return _login_page(request)


@router.post("/console/login")
async def login(request: Request, services: ServicesDep, inbound: InboundDep) -> Response:
    await check_ip(services.limiter, services.settings.limits, inbound.client_ip)  # guessing is limited
    form = await read_form(request)
    cookie = request.cookies.get(sessions.FORM_COOKIE)
    if not cookie or not form.get("csrf") or form.get("csrf") != cookie:
        return forbidden()
    master = services.settings.admin.master_key.get_secret_value()
    token = await sessions.sign_in(
        services.db, form.get("master_key", ""), master, hours=services.settings.console.session_hours
    )
    if token is None:
        return _login_page(request, error="That is not the master key.", status=401)
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        sessions.SESSION_COOKIE,
        token,
        max_age=int(services.settings.console.session_hours * 3600),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )
    return response


@router.post("/console/logout")
async def logout(request: Request, services: ServicesDep) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    if not sessions.csrf_ok(token, (await read_form(request)).get("csrf")):
        return forbidden()
    await sessions.sign_out(services.db, token, services.settings.admin.master_key.get_secret_value())
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(sessions.SESSION_COOKIE, path="/console")
    return response


@router.get("/console/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC_TYPES:
        raise NotFound(f"No console file {name!r}.")
    return Response(static_file(name), media_type=STATIC_TYPES[name], headers={"cache-control": "max-age=300"})


# --- pages ------------------------------------------------------------------------------------------


@router.get("/console")
async def overview(request: Request, services: ServicesDep) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    await services.ledger.flush()
    return page("overview.html", {**_base(token, "overview", "Overview"), **await pages.overview(services)})


async def _keys_page(
    services: ServicesDep,
    token: str,
    query: str | None,
    *,
    created: dict[str, Any] | None = None,
    error: str | None = None,
    form: Form | None = None,
    status: int = 200,
) -> Response:
    context = {
        **_base(token, "keys", "Keys"),
        "keys": await search_keys(services.db, query),
        "q": query or "",
        "created": created,
        "error": error,
        "form": form or {},
        "models": [m.id for m in services.catalog.models],
    }
    return page("keys.html", context, status=status)


@router.get("/console/keys")
async def keys(request: Request, services: ServicesDep, q: str | None = None) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    await services.ledger.flush()
    query = (q or "").strip()[:200]
    return await _keys_page(services, token, query if query and printable(query) else None)


@router.post("/console/keys")
async def create_key(request: Request, services: ServicesDep) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    form = await read_form(request)
    if not sessions.csrf_ok(token, form.get("csrf")):
        return forbidden()
    try:
        fields = {k: v for k, v in settings_fields(form).items() if v is not None}
        spec = KeyCreate(name=form.get("name", "").strip(), balance_usd=usd_field(form, "balance_usd") or 0, **fields)
        created = await accounts.create_key(services.db, services.catalog, spec)
    except ValidationError as exc:
        return await _keys_page(services, token, None, error=first_error(exc), form=form, status=400)
    except (AccountError, FormError) as exc:
        return await _keys_page(services, token, None, error=str(exc), form=form, status=400)
    return await _keys_page(services, token, None, created=created)


async def _key_page(
    services: ServicesDep,
    token: str,
    key_id: str,
    *,
    error: str | None = None,
    where: str | None = None,
    done: str | None = None,
    status: int = 200,
) -> Response:
    data = await pages.key_page(services, key_id) if printable(key_id) else None
    if data is None:
        context = {**_base(token, "keys", "No such key"), "message": f"There is no key with id {key_id!r}."}
        return page("error.html", context, status=404)
    context = {**_base(token, "keys", data["key"]["name"]), **data, "error": error, "error_form": where, "done": done}
    return page("key.html", context, status=status)


@router.get("/console/keys/{key_id}")
async def key_detail(key_id: str, request: Request, services: ServicesDep, done: str | None = None) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    await services.ledger.flush()
    shown = {
        "topup": "Balance topped up.",
        "edit": "Settings saved.",
        "alert": "Alert threshold saved.",
        "revoke": "Key revoked: it is refused from now on.",
    }.get(done or "")
    return await _key_page(services, token, key_id, done=shown)


@router.post("/console/keys/{key_id}/{action}")
async def key_action(key_id: str, action: str, request: Request, services: ServicesDep) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    form = await read_form(request)
    if not sessions.csrf_ok(token, form.get("csrf")):
        return forbidden()
    if not printable(key_id) or await accounts.get_key(services.db, key_id) is None:
        return await _key_page(services, token, key_id)
    try:
        if action == "topup":
            await accounts.topup_key(
                services.db, services.ledger, key_id, TopUp(amount_usd=usd_field(form, "amount_usd"))
            )
        elif action == "edit":
            fields = settings_fields(form) | {"name": form.get("name", "").strip()}
            await accounts.update_key(services.db, services.catalog, services.keys, key_id, KeyUpdate(**fields))
        elif action == "alert":
            threshold = usd_field(form, "threshold_usd")
            await alerts.set_threshold(services.db, key_id, usd_to_units(threshold) if threshold is not None else None)
        elif action == "revoke":
            await services.keys.revoke(key_id)
        else:
            raise NotFound(f"No console action {action!r}.")
    except ValidationError as exc:
        return await _key_page(services, token, key_id, error=first_error(exc), where=action, status=400)
    except (AccountError, FormError, MoneyError) as exc:
        return await _key_page(services, token, key_id, error=str(exc), where=action, status=400)
    return RedirectResponse(f"/console/keys/{key_id}?done={action}", status_code=303)


def _usage_filter(request: Request) -> UsageFilter:
    params = request.query_params
    return UsageFilter.parse({n: params.get(n) for n in ("key_id", "model", "status", "since", "until")})


@router.get("/console/usage")
async def usage(request: Request, services: ServicesDep, page_no: int = 0) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    await services.ledger.flush()
    params = {n: request.query_params.get(n, "") for n in ("key_id", "model", "status", "since", "until")}
    context: dict[str, Any] = {**_base(token, "usage", "Usage"), "filters": params, "error": None}
    try:
        where = _usage_filter(request)
    except ValueError as exc:
        empty = {"rows": [], "more": False, "page": 0, "models": [], "statuses": pages.STATUSES}
        return page("usage.html", {**context, **empty, "error": str(exc)}, status=400)
    chosen = {k: v for k, v in params.items() if v}
    context |= await pages.usage_page(services, where, max(0, min(page_no, 10_000)))
    context |= {"query": urlencode(chosen), "export": "/console/usage.csv?" + urlencode(chosen)}
    return page("usage.html", context)


@router.get("/console/usage.csv")
async def usage_export(request: Request, services: ServicesDep) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    try:
        where = _usage_filter(request)
    except ValueError as exc:
        return page("error.html", {**_base(token, "usage", "Bad filter"), "message": str(exc)}, status=400)
    await services.ledger.flush()
    return StreamingResponse(
        usage_csv(services.db, where),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="seedgate-usage.csv"', "cache-control": "no-store"},
    )


@router.get("/console/upstreams")
async def upstreams(request: Request, services: ServicesDep) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    return page("upstreams.html", {**_base(token, "upstreams", "Upstreams"), **await pages.upstreams_page(services)})


@router.get("/console/alerts")
async def alert_list(request: Request, services: ServicesDep) -> Response:
    token = await _session(request, services)
    if token is None:
        return _to_login()
    return page("alerts.html", {**_base(token, "alerts", "Alerts"), **await pages.alerts_page(services)})
