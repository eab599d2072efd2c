"""JSON in and out with orjson: request bodies parsed with a depth limit, responses rendered exactly,
values written compactly (``dumps_compact``, the one fallback for what orjson refuses to write).

Rule owned here: a request body nested deeper than ``MAX_JSON_DEPTH`` (containers inside containers)
is refused with a 400 ``json_too_deep`` before any other code sees it. orjson reads up to 1024 levels
but writes only 254, so a deeper body would otherwise fail later, in whatever serialises it again
(token estimates, the upstream request): a 500 instead of the client's own error. No real request
comes near 64.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response

from app.errors import InvalidRequest

MAX_JSON_DEPTH = 64


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, headers=headers, media_type="application/json")


def dumps_compact(value: Any) -> bytes:
    """Compact JSON. What orjson refuses to write -- lone surrogates and integers beyond 64 bits, both
    possible in values the stdlib parsed (an upstream's) -- the stdlib writes instead, escaped."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def loads_upstream(raw: str | bytes) -> Any:
    """An upstream's JSON value. orjson refuses a lone surrogate escape (``"\\ud83d"``: half an emoji, from
    an upstream that cut a UTF-16 pair between chunks); the stdlib reads it, so the text is not lost
    (``dumps_compact`` writes it again). ``ValueError`` if neither can read it."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return json.loads(raw)
        except RecursionError:  # the stdlib parser recurses: a value nested too deep for it is no answer
            raise ValueError("nested too deep") from None


def parse_request_json(raw: bytes) -> Any:
    """The body's JSON value; ``InvalidRequest`` if it is not JSON or is nested too deep."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    # fast path: a body with few brackets cannot be deep, and counting bytes costs next to nothing
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and too_deep(value, MAX_JSON_DEPTH):
        raise InvalidRequest(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.", code="json_too_deep")
    return value


def too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` has containers nested more than ``limit`` deep (level by level: no recursion)."""
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for node in level:
            # orjson builds exact dicts and lists; list comprehensions keep this ~4x cheaper than a stack
            below += [child for child in (node.values() if type(node) is dict else node) if type(child) in _CONTAINERS]
        level = below
    return False


_CONTAINERS = (dict, list)
