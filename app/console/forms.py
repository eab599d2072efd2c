"""Reading the console's forms: urlencoded bodies, optional fields, USD amounts, first validation error.

Also the two answers every form route shares: the cookie's ``Secure`` flag and the 403 of a bad CSRF token.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from app.console.render import page

Form = dict[str, str]


class FormError(ValueError):
    """A form field the console cannot accept; shown next to the form."""


async def read_form(request: Request) -> Form:
    try:
        parsed = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in parsed.items()}


def secure(request: Request) -> bool:
    """TLS here, or at a trusted proxy that says so: the cookies then carry ``Secure``."""
    if request.url.scheme == "https":
        return True
    services = request.state.services
    peer = request.client.host if request.client else None
    return peer in services.trusted and request.headers.get("x-forwarded-proto", "").lower() == "https"


def forbidden() -> Response:
    return page(
        "error.html",
        {
            "title": "Refused",
            "message": "The form expired or was not sent from this console. Reload the page and try again.",
        },
        status=403,
    )


def first_error(exc: ValidationError) -> str:
    first = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def printable(text: str) -> bool:
    """Ids and searches with control characters match nothing (and Postgres refuses NUL in a parameter)."""
    return not any(ord(c) < 32 or c == "\x7f" for c in text)


def optional(form: Form, name: str) -> str | None:
    value = form.get(name, "").strip()
    return value or None


def usd_field(form: Form, name: str) -> Decimal | None:
    raw = optional(form, name)
    if raw is None:
        return None
    try:
        return Decimal(raw.lstrip("$").replace(",", ""))
    except InvalidOperation:
        raise FormError(f"{name}: not an amount in USD: {raw[:30]!r}") from None


def settings_fields(form: Form) -> dict[str, Any]:
    models = optional(form, "models")
    expires = optional(form, "expires_at")
    return {
        "models": [m.strip() for m in models.split(",") if m.strip()] if models else None,
        "rpm": optional(form, "rpm"),
        "tpm": optional(form, "tpm"),
        "max_concurrent": optional(form, "max_concurrent"),
        "monthly_quota_usd": usd_field(form, "monthly_quota_usd"),
        "expires_at": expires,
    }
