"""Hostile bodies and headers against the billed endpoints of a real gateway (issues 11 and 12).

Hypothesis builds requests around each endpoint's schema (right and wrong types in every field, huge and negative
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
from tests.support.hostile import json_values, request_bodies, responses_bodies

MAX_EXAMPLES = 120
# printable ASCII header values; no leading or trailing blanks, which the HTTP client itself refuses to send
ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)


def encoded(body: Any) -> bytes:
    return json.dumps(body).encode()


def raw_bodies(bodies: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    return (
        bodies.map(encoded)
        | bodies.map(encoded).flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda cut: b[:cut]))
        | st.binary(max_size=300)
        | json_values.map(encoded)
    )


BODIES = {
    "/v1/chat/completions": raw_bodies(request_bodies),
    "/v1/messages": raw_bodies(request_bodies),
    "/v1/responses": raw_bodies(responses_bodies),
}


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


@pytest.mark.parametrize("path", list(BODIES))
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
        @given(body=BODIES[path], headers=header_sets(key))
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
