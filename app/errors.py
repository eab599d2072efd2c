"""Errors the gateway answers with, and how they are rendered.

    GatewayError                      status  type                    code
    ├── InvalidRequest                400     invalid_request_error   invalid_request (or a specific one)
    ├── AuthenticationFailed          401     invalid_request_error   invalid_api_key
    ├── InsufficientBalance           402     insufficient_balance    insufficient_balance
    ├── ModelNotAllowed               403     permission_error        model_not_allowed
    ├── NotFound                      404     invalid_request_error   not_found
    │   ├── ModelNotFound             404     invalid_request_error   model_not_found (param "model")
    │   └── BaseUrlDoubledV1          404     invalid_request_error   base_url_doubled_v1 (/v1/v1/...)
    ├── RequestTimeout                408     invalid_request_error   request_timeout (body too slow)
    ├── PayloadTooLarge               413     invalid_request_error   request_too_large
    ├── RateLimited                   429     rate_limit_error        rate_limit_exceeded (+ Retry-After)
    ├── MonthlyQuotaExceeded          429     insufficient_quota      monthly_quota_exceeded (x-should-retry: false)
    ├── ContentPolicyViolation        451     content_policy_violation content_policy_violation
    ├── InternalError                 500     api_error               internal_error
    ├── UpstreamError                 502     upstream_error          upstream_error
    ├── ServiceUnavailable            503     service_unavailable     service_unavailable
    └── UpstreamTimeout               504     timeout_error           upstream_timeout

Every error leaves through ``render``, in the envelope of the API the client speaks: OpenAI's
``{"error": {"message", "type", "param", "code"}}`` (all four keys, plus ``fallback_suggestion`` when
there is one) or Anthropic's ``{"type": "error", "error": {"type", "message"}, "request_id"}``.
Messages are written by the gateway; upstream bodies are never copied into them.

Headers every error carries (``render``): ``x-request-id``, and on Anthropic responses ``request-id``
too (the anthropic SDK's ``request_id``); ``x-should-retry`` -- ``true`` where a retry can help (408,
429, every 5xx, 529), ``false`` on every other refusal (400/401/402/403/404/413/451), so SDKs and
Claude Code fail a wrong key at once instead of retrying for minutes. An error's own header wins
(the monthly quota is a 429 that no retry cures).

An Anthropic client sees Anthropic's statuses and types (``anthropic_status``, ``anthropic_error_type``):

    400 invalid_request_error     401 authentication_error   402 billing_error
    403 permission_error          404 not_found_error        413 request_too_large
    429 rate_limit_error          503, 529 -> 529 overloaded_error
    504 timeout_error             other 5xx -> 500 api_error  other 4xx invalid_request_error
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson
from starlette.responses import Response

Envelope = Literal["openai", "anthropic"]


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        fallback_suggestion: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}
        self.fallback_suggestion = fallback_suggestion

    def openai_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        if self.fallback_suggestion:
            error["fallback_suggestion"] = self.fallback_suggestion
        return {"error": error}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class InsufficientBalance(GatewayError):
    status = 402
    type = "insufficient_balance"
    default_code = "insufficient_balance"


class ModelNotAllowed(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        shown = model if len(model) <= 100 else model[:100] + "..."
        super().__init__(
            f"The model '{shown}' does not exist. GET /v1/models lists the available models.",
            param="model",
            fallback_suggestion="try different model",
        )


class BaseUrlDoubledV1(NotFound):
    """``/v1/v1/messages``: a base URL ending in ``/v1`` given to a client that appends ``/v1`` itself."""

    default_code = "base_url_doubled_v1"

    def __init__(self, method: str, path: str) -> None:
        if path.startswith("/v1/v1/messages"):
            advice = "Set ANTHROPIC_BASE_URL to the gateway root without /v1 (http://HOST:PORT): Claude Code "
            advice += "and the anthropic SDK append /v1/messages themselves."
        else:
            advice = "Set the base URL to http://HOST:PORT/v1 (with /v1 once): the client appends the rest."
        super().__init__(f"No route for {method} {path[:200]}: the base URL ends in /v1 twice. {advice}")


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class MonthlyQuotaExceeded(GatewayError):
    status = 429
    type = "insufficient_quota"
    default_code = "monthly_quota_exceeded"

    def __init__(self) -> None:
        super().__init__(
            "This key has reached its monthly spending quota.",
            headers={"x-should-retry": "false"},
            fallback_suggestion="wait for the next month or ask the operator to raise the quota",
        )


class ContentPolicyViolation(GatewayError):
    status = 451
    type = "content_policy_violation"
    default_code = "content_policy_violation"


class InternalError(GatewayError):
    status = 500
    type = "api_error"
    default_code = "internal_error"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    default_code = "upstream_error"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_status(status: int) -> int:
    """The status a Claude client gets for one of the gateway's."""
    if status in (503, 529):
        return 529
    if status >= 500 and status != 504:
        return 500
    return status


def anthropic_error_type(status: int) -> str:
    status = anthropic_status(status)
    return _ANTHROPIC_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def anthropic_error_body(status: int, message: str, request_id: str | None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": anthropic_error_type(status), "message": message},
        "request_id": request_id,
    }


def envelope_for(path: str, *, anthropic_version: bool) -> Envelope:
    """Which API a request speaks, for the routes that serve both (``/v1/models``) and for 404s."""
    if path.startswith("/v1/v1/"):
        path = path.removeprefix("/v1")
    if path.startswith("/v1/messages") or (path.startswith("/v1/models") and anthropic_version):
        return "anthropic"
    return "openai"


def request_id_headers(envelope: Envelope, request_id: str) -> dict[str, str]:
    """The request id headers of every response: ``request-id`` is Anthropic's name for it."""
    if envelope == "anthropic":
        return {"x-request-id": request_id, "request-id": request_id}
    return {"x-request-id": request_id}


def should_retry(status: int) -> bool:
    """Whether a client's retry of the same request can succeed (``x-should-retry``)."""
    return status in (408, 429) or status >= 500


def render(error: GatewayError, *, envelope: Envelope, request_id: str | None) -> Response:
    """THE error response: every refusal of every route leaves through here."""
    headers = {"x-should-retry": "true" if should_retry(error.status) else "false", **error.headers}
    if request_id:
        headers.update(request_id_headers(envelope, request_id))
    if envelope == "anthropic":
        body = anthropic_error_body(error.status, error.message, request_id)
        return Response(orjson.dumps(body), anthropic_status(error.status), headers, media_type="application/json")
    return Response(orjson.dumps(error.openai_body()), error.status, headers, media_type="application/json")
