from __future__ import annotations

import pytest

from app.errors import (
    AuthenticationFailed,
    BaseUrlDoubledV1,
    ContentPolicyViolation,
    Envelope,
    GatewayError,
    InsufficientBalance,
    InternalError,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    MonthlyQuotaExceeded,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    anthropic_error_body,
    anthropic_error_type,
    anthropic_status,
    envelope_for,
    render,
)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (507, "api_error"),
        (451, "invalid_request_error"),
        (409, "invalid_request_error"),
    ],
)
def test_status_maps_to_anthropic_error_type(status: int, error_type: str) -> None:
    assert anthropic_error_type(status) == error_type


@pytest.mark.parametrize(
    ("upstream", "sent"),
    [(429, 429), (503, 529), (529, 529), (502, 500), (500, 500), (504, 504), (400, 400)],
)
def test_upstream_errors_are_restatused_for_claude_clients(upstream: int, sent: int) -> None:
    assert anthropic_status(upstream) == sent


def test_error_body_is_the_anthropic_envelope() -> None:
    assert anthropic_error_body(429, "Slow down.", "req_123") == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Slow down."},
        "request_id": "req_123",
    }


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (InvalidRequest("bad"), "false"),
        (AuthenticationFailed("Invalid API key."), "false"),
        (InsufficientBalance("poor"), "false"),
        (ModelNotAllowed("no"), "false"),
        (ModelNotFound("claude-opus-4-8"), "false"),
        (PayloadTooLarge("big"), "false"),
        (ContentPolicyViolation("no"), "false"),
        (MonthlyQuotaExceeded(), "false"),  # a 429 that waiting does not cure
        (RequestTimeout("slow body"), "true"),
        (RateLimited("slow down", headers={"retry-after": "1"}), "true"),
        (InternalError("oops"), "true"),
        (UpstreamError("broken"), "true"),
        (ServiceUnavailable("draining"), "true"),
        (UpstreamTimeout("late"), "true"),
    ],
)
@pytest.mark.parametrize("envelope", ["openai", "anthropic"])
def test_every_error_tells_clients_whether_a_retry_can_help(
    error: GatewayError, retry: str, envelope: Envelope
) -> None:
    response = render(error, envelope=envelope, request_id="req_1")
    assert response.headers["x-should-retry"] == retry


def test_anthropic_errors_carry_request_id_for_the_sdk() -> None:
    anthropic = render(AuthenticationFailed("Invalid API key."), envelope="anthropic", request_id="req_7")
    assert (anthropic.headers["request-id"], anthropic.headers["x-request-id"]) == ("req_7", "req_7")
    openai = render(AuthenticationFailed("Invalid API key."), envelope="openai", request_id="req_7")
    assert openai.headers["x-request-id"] == "req_7"
    assert "request-id" not in openai.headers


@pytest.mark.parametrize(
    ("path", "envelope", "advice"),
    [
        ("/v1/v1/messages", "anthropic", "ANTHROPIC_BASE_URL to the gateway root without /v1"),
        ("/v1/v1/messages/count_tokens", "anthropic", "ANTHROPIC_BASE_URL to the gateway root without /v1"),
        ("/v1/v1/chat/completions", "openai", "http://HOST:PORT/v1 (with /v1 once)"),
    ],
)
def test_a_doubled_v1_is_explained_in_the_clients_own_envelope(path: str, envelope: str, advice: str) -> None:
    assert envelope_for(path, anthropic_version=False) == envelope
    error = BaseUrlDoubledV1("POST", path)
    assert (error.status, error.code) == (404, "base_url_doubled_v1")
    assert advice in error.message
