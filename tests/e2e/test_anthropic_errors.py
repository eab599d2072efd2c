"""Refusals and failures reach Claude clients in the Anthropic error envelope (docs/protocol.md 3.4, 3.5).

Envelope: ``{"type": "error", "error": {"type", "message"}, "request_id": "req_..."}``. A broken
upstream stream must end in an ``error`` event, never in a normal ``end_turn``, and leave exactly one
partial usage row and no hold behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.e2e.conftest import StartGateway
from tests.support.gateway import GatewayProcess

MODEL = "doubao-seed-2.0-pro"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


def claude(gateway: GatewayProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)


def assert_envelope(body: Any, error_type: str) -> None:
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["request_id"], str)
    assert body["request_id"].startswith("req_")


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until ``check()`` holds; settlement of a broken stream finishes after the client saw the end."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields["event"], orjson.loads(fields["data"])))
    return events


def test_missing_key_is_401_authentication_error(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": HELLO}
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        response = http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    assert_envelope(response.json(), "authentication_error")
    assert response.headers["x-request-id"] == response.json()["request_id"]
    assert fake.requests == []


def test_bad_x_api_key_is_401_authentication_error(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    with claude(gateway, "sk-not-a-seedgate-key") as client, pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert caught.value.status_code == 401
    assert_envelope(caught.value.body, "authentication_error")
    assert fake.requests == []


def test_bad_bearer_token_is_401_authentication_error(
    gateway: GatewayProcess, fake: FakeUpstreamThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    client = anthropic.Anthropic(base_url=gateway.base_url, auth_token="sk-not-a-seedgate-key", max_retries=0)
    with client, pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert_envelope(caught.value.body, "authentication_error")
    assert fake.requests == []


@pytest.mark.parametrize("balance", ["0", "0.001"], ids=["empty", "below-worst-case"])
def test_balance_too_small_is_402_billing_error_and_costs_nothing(
    gateway: GatewayProcess, fake: FakeUpstreamThread, balance: str
) -> None:
    key_id, key = gateway.create_key(balance)
    before = gateway.key(key_id)["balance_usd"]
    with claude(gateway, key) as client, pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model=MODEL, max_tokens=1000, messages=HELLO)
    assert caught.value.status_code == 402
    assert_envelope(caught.value.body, "billing_error")
    assert gateway.key(key_id)["balance_usd"] == before
    assert gateway.usage(key_id) == []
    assert fake.requests == []


def test_unknown_model_is_404_not_found_error(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    with claude(gateway, key) as client, pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-opus-4-1", max_tokens=100, messages=HELLO)
    assert_envelope(caught.value.body, "not_found_error")
    assert fake.requests == []


def test_missing_max_tokens_is_400_invalid_request_error(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        response = http.post("/v1/messages", json={"model": MODEL, "messages": HELLO}, headers={"x-api-key": key})
    assert response.status_code == 400
    assert_envelope(response.json(), "invalid_request_error")
    assert "max_tokens" in response.json()["error"]["message"]
    assert fake.requests == []


def test_malformed_json_is_400_invalid_request_error(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        response = http.post("/v1/messages", content=b"{not json", headers={"x-api-key": key})
    assert response.status_code == 400
    assert_envelope(response.json(), "invalid_request_error")


@pytest.mark.parametrize(
    ("upstream_status", "status", "error_type"),
    [(429, 429, "rate_limit_error"), (503, 529, "overloaded_error"), (500, 500, "api_error")],
)
def test_upstream_http_errors_are_mapped_to_anthropic_statuses(
    start_gateway: StartGateway, fake: FakeUpstreamThread, upstream_status: int, status: int, error_type: str
) -> None:
    # A dedicated gateway without retries: the shared one would retry (and count breaker failures).
    gateway = start_gateway({"routing": {"max_attempts": 1, "breaker_failures": 100}})
    key_id, key = gateway.create_key("1")
    fake.enqueue({"status": upstream_status, "headers": {"retry-after": "1"}})
    with claude(gateway, key) as client, pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as events:
            events.get_final_message()
    assert caught.value.status_code == status
    assert_envelope(caught.value.body, error_type)
    assert len(fake.requests) == 1
    assert gateway.key(key_id)["balance_usd"] == "1.00"


def test_broken_upstream_stream_makes_the_sdk_raise(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    # events: role chunk, "Hel", "lo", then a TCP reset: no finish_reason, no usage, no [DONE]
    fake.enqueue({"content_chunks": ["Hel", "lo", " wor", "ld"], "reset_after_events": 3})
    texts: list[str] = []
    with claude(gateway, key) as client, pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as events:
            texts.extend(events.text_stream)
    assert "".join(texts) == "Hello"
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] in ("api_error", "overloaded_error")

    wait_for(lambda: len(gateway.usage(key_id)) == 1 and gateway.key(key_id)["held_usd"] == "0.00")
    [row] = gateway.usage(key_id)
    assert row["partial"] is True
    account = gateway.key(key_id)
    assert account["held_usd"] == "0.00"
    assert account["balance_usd"] != "1.00"  # what was streamed is billed


def test_broken_upstream_stream_ends_with_an_error_event_not_end_turn(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["Hel", "lo", " wor", "ld"], "reset_after_events": 3})
    body = {"model": MODEL, "max_tokens": 100, "messages": HELLO, "stream": True}
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        response = http.post("/v1/messages", json=body, headers={"x-api-key": key})
    assert response.status_code == 200
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-1] == "error"
    assert "message_delta" not in names
    assert "message_stop" not in names
    for name, data in events:
        assert data["type"] == name
    wait_for(lambda: len(gateway.usage(key_id)) == 1 and gateway.key(key_id)["held_usd"] == "0.00")


def test_upstream_error_event_mid_stream_ends_with_an_error_event(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content": "partial", "stream_error": {"message": "overloaded", "code": "ServerOverloaded"}})
    with claude(gateway, key) as client, pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as events:
            events.get_final_message()
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    wait_for(lambda: gateway.key(key_id)["held_usd"] == "0.00")
