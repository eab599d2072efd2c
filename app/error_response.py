"""Rendering a ``GatewayError`` in the envelope of the API the client speaks (see ``app.errors``)."""

from __future__ import annotations

from starlette.responses import Response

from app.dialects.anthropic.errors import error_body as anthropic_error_body
from app.errors import GatewayError
from app.json import json_response

# the status an Anthropic client gets for a gateway status (PROTOCOL.md 3.5 / 3.7)
_ANTHROPIC_STATUS = {502: 500, 503: 529}


def wants_anthropic(path: str, has_anthropic_version: bool) -> bool:
    return path.startswith("/v1/messages") or (path.startswith("/v1/models") and has_anthropic_version)


def error_response(error: GatewayError, *, anthropic: bool, request_id: str | None) -> Response:
    headers = {**error.headers}
    if request_id:
        headers["x-request-id"] = request_id
    if anthropic:
        status = _ANTHROPIC_STATUS.get(error.status, error.status)
        return json_response(anthropic_error_body(status, error.message, request_id), status, headers)
    return json_response(error.openai_body(), error.status, headers)
