"""Hostile bodies and headers against the two billed endpoints of a real gateway (issue 11).

Hypothesis builds requests around the schema (right and wrong types in every field, huge and negative
numbers, deep nesting, unknown models, broken UTF-8, truncated JSON, garbage headers), a bounded
number of them (``MAX_EXAMPLES`` per endpoint, no shrinking phase beyond Hypothesis's defaults, about
ten seconds in all). Every answer must be the API's own: never a 500 or a 422, every refusal in the
endpoint's envelope, and a refused request leaves the key's balance exactly as it was.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway import GatewayProcess

MAX_EXAMPLES = 120
MODELS = ["doubao-seed-2.0-pro", "pro-latest", "claude-sonnet-4-6", "doubao-seed-2.0-mini", "no-such-model", ""]
ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=25,
)


def deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": [value]}
    return value


content = (
    st.text(max_size=50)
    | json_values
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "image", "tool_use", "x"])},
            optional={"text": json_values, "image_url": json_values, "source": json_values},
        ),
        max_size=3,
    )
    | st.integers(60, 300).map(deep)
)
messages = (
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer", "x"]) | json_values},
            optional={"content": content, "tool_calls": json_values, "name": json_values, "tool_call_id": json_values},
        ),
        max_size=4,
    )
    | json_values
)
request_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(MODELS) | json_values,
        "messages": messages,
        "system": content,
        "max_tokens": st.integers(-5, 2**66) | json_values,
        "max_completion_tokens": st.integers(-5, 2**66) | json_values,
        "n": st.integers(-2, 200) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "temperature": json_values,
        "thinking": json_values,
        "metadata": json_values,
    },
)


def encoded(body: Any) -> bytes:
    return json.dumps(body).encode()


raw_bodies = (
    request_bodies.map(encoded)
    | request_bodies.map(encoded).flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda cut: b[:cut]))
    | st.binary(max_size=300)
    | json_values.map(encoded)
)


def header_sets(key: str) -> st.SearchStrategy[dict[str, str]]:
    auth = st.sampled_from([f"Bearer {key}", f"Bearer {key}x", "Bearer", "Basic abc", ""]) | ASCII
    return st.fixed_dictionaries(
        {},
        optional={
            "authorization": auth,
            "x-api-key": st.sampled_from([key, "sk-nope"]) | ASCII,
            "content-type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"])
            | ASCII,
            "anthropic-version": ASCII,
            "x-forwarded-for": ASCII,
            "accept": ASCII,
        },
    )


def assert_envelope(path: str, response: httpx.Response) -> None:
    body = response.json()
    if path == "/v1/messages":
        assert body["type"] == "error", body
        assert set(body["error"]) >= {"type", "message"}, body
    else:
        assert set(body["error"]) >= {"message", "type", "param", "code"}, body


def wait_settled(admin: httpx.Client, key_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        view: dict[str, Any] = admin.get(f"/admin/keys/{key_id}").json()
        if view["held_usd"] in ("0", "0.00") or time.monotonic() > deadline:
            return view
        time.sleep(0.02)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_hostile_requests_never_break_the_envelope_or_the_books(gateway: GatewayProcess, path: str) -> None:
    key_id, key = gateway.create_key("5", rpm=100_000)
    started = time.monotonic()
    with httpx.Client(base_url=gateway.base_url, timeout=15) as http, gateway.admin() as admin:
        balance = [wait_settled(admin, key_id)["balance_usd"]]

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        )
        @given(body=raw_bodies, headers=header_sets(key))
        def one(body: bytes, headers: dict[str, str]) -> None:
            response = http.post(path, content=body, headers=headers)
            assert response.status_code not in (422, 500), response.text
            assert response.status_code < 500 or response.status_code in (502, 503, 504), response.text
            view = wait_settled(admin, key_id)
            if response.status_code >= 400:
                assert_envelope(path, response)
                assert view["balance_usd"] == balance[0], (response.status_code, response.text)
            balance[0] = view["balance_usd"]

        one()
    assert time.monotonic() - started < 60
    totals = gateway.ledger()
    assert totals["balanced"], totals
