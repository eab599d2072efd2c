from __future__ import annotations

import pytest

from app.errors import anthropic_error_body, anthropic_error_type, anthropic_status


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
