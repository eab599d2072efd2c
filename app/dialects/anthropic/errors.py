"""Anthropic-dialect errors: the request validation error and the error envelope.

Status -> ``error.type`` (Anthropic's documented table, extended for the statuses a gateway meets):

    400 invalid_request_error     401 authentication_error   402 billing_error
    403 permission_error          404 not_found_error        413 request_too_large
    429 rate_limit_error          503, 529 overloaded_error  504 timeout_error
    other 5xx api_error           other 4xx invalid_request_error

Upstream trouble is re-statused before it reaches a Claude client (``anthropic_status_for_upstream``):
429 stays 429, overload (503/529) becomes 529, a timeout 504, any other 5xx 500.
"""

from __future__ import annotations

from typing import Any

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicRequestError(Exception):
    """A Messages request body that cannot be served; ``param`` names the field (``messages.2.content``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def error_type_for_status(status: int) -> str:
    known = _TYPE_BY_STATUS.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_status_for_upstream(status: int) -> int:
    """The status a Claude client gets for an upstream HTTP error status."""
    if status in (503, 529):
        return 529
    if status == 504:
        return 504
    if status >= 500:
        return 500
    return status


def error_body(status: int, message: str, request_id: str | None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type_for_status(status), "message": message},
        "request_id": request_id,
    }
