"""The Responses dialect's 400: ``param`` names the field (``input.2.content``), the message never repeats
client content."""

from __future__ import annotations

from app.errors import InvalidRequest


def invalid(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {problem}", param=param)
