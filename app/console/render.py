"""Rendering console pages: the Jinja2 environment (autoescaped), formatting filters, security headers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

HERE = Path(__file__).resolve().parent
STATIC_TYPES = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def usd(value: Any, places: int = 4) -> str:
    """``$1,234.5678``: money as the console shows it (exact values stay in the API and CSV)."""
    if value is None:
        return "-"
    whole, _, fraction = f"{Decimal(str(value)):,.{places}f}".partition(".")
    shown = f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"  # at least cents, at most ``places`` digits
    return f"${shown}"


def units_usd(units: int) -> str:
    return usd(Decimal(units) / Decimal(10**12))


def when(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), auto_reload=False
    )
    env.filters.update(usd=usd, units_usd=units_usd, when=when, number=number)
    return env


def page(template: str, context: dict[str, Any], *, status: int = 200) -> Response:
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


@cache
def static_file(name: str) -> bytes:
    return (HERE / "static" / name).read_bytes()
