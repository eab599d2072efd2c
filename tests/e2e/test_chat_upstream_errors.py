"""Upstream failures become the gateway's own errors (451, 502, 503, 504), never the upstream's body.

A request the upstream refused consumed nothing: the hold is released, the balance is unchanged and
no usage row is written. Failures the upstream never accepted (429/5xx, connect errors) are tried
again (``FAULT_TOLERANT`` allows two attempts); the rest are not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import (
    FAULTS_READ_TIMEOUT,
    HELLO,
    MASTER_KEY,
    UPSTREAM_KEY,
    GatewayProcess,
    api_client,
    assert_prompt_estimate_charged,
    assert_untouched,
    chat_body,
    dedicated_gateway,
    error_of,
    faults_config,
    openai_client,
)

LEAKY_SECRET = "sk-proj-LEAKEDabcdefghijklmnopqrstuvwxyz0123456789"


def leaky_body(message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "InternalServiceError"}}


@pytest.fixture(scope="module")
def faults_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[GatewayProcess]:
    with dedicated_gateway(tmp_path_factory.mktemp("faults"), upstream.url, faults_config(upstream.url)) as gateway:
        yield gateway


@pytest.fixture
def gateway(faults_gateway: GatewayProcess, fake: FakeUpstreamThread) -> GatewayProcess:
    """This module's gateway replaces the shared one: its failures must not trip the shared breaker."""
    return faults_gateway


def failing(script: dict[str, Any], fake: FakeUpstreamThread) -> None:
    """Queue ``script`` for every attempt the gateway may make."""
    fake.enqueue(script, script)


def test_sensitive_content_is_451_and_logged_as_a_policy_event(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    body = {
        "error": {
            "code": "SensitiveContentDetected",
            "message": "The request failed because the input text may contain sensitive information.",
            "param": "",
            "type": "BadRequest",
        }
    }
    failing({"status": 400, "error_body": body}, fake)
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body())
    error = error_of(response, 451)
    assert len(fake.requests) == 1  # a refusal on content is final
    assert error["type"] == "content_policy_violation"
    assert_untouched(gateway, key_id, "1.00")
    with gateway.admin() as admin:
        events = admin.get("/admin/policy-events", params={"key_id": key_id}).json()["data"]
    [event] = events
    assert event["code"] == "SensitiveContentDetected"
    assert event["key_id"] == key_id
    assert event["model"] == "doubao-seed-2.0-pro"
    assert event["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(("status", "attempts"), [(500, 2), (502, 2), (401, 1), (403, 1)])
def test_upstream_failure_is_502_without_the_upstream_body_or_key(
    gateway: GatewayProcess, fake: FakeUpstreamThread, status: int, attempts: int
) -> None:
    key_id, key = gateway.create_key("1")
    echoed = f"invalid header Authorization: Bearer {UPSTREAM_KEY}; also saw {LEAKY_SECRET} and {MASTER_KEY}"
    failing({"status": status, "error_body": leaky_body(echoed)}, fake)
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body())
    error = error_of(response, 502)
    assert len(fake.requests) == attempts
    assert error["type"] == "upstream_error"
    for secret in (UPSTREAM_KEY, LEAKY_SECRET, MASTER_KEY, "invalid header", "InternalServiceError"):
        assert secret not in response.text
        assert secret.lower() not in str(response.headers).lower()
    assert_untouched(gateway, key_id, "1.00")


def test_upstream_bad_request_message_is_redacted(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    failing({"status": 400, "error_body": leaky_body(f"bad field; key {LEAKY_SECRET} / {UPSTREAM_KEY}")}, fake)
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body())
    error_of(response, 400)
    assert LEAKY_SECRET not in response.text
    assert UPSTREAM_KEY not in response.text
    assert_untouched(gateway, key_id, "1.00")


def test_sdk_raises_internal_server_error_on_502(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    failing({"status": 500}, fake)
    with openai_client(gateway, key) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO)
    assert caught.value.status_code == 502
    assert_untouched(gateway, key_id, "1.00")


def test_upstream_unavailable_is_503(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    failing({"status": 503, "error_body": leaky_body("overloaded, key " + UPSTREAM_KEY)}, fake)
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    assert error_of(response, 503)["type"] == "service_unavailable"
    assert UPSTREAM_KEY not in response.text
    assert_untouched(gateway, key_id, "1.00")


def test_upstream_rate_limit_is_429_with_retry_after(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    failing({"status": 429, "headers": {"retry-after": "7"}}, fake)
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body())
    assert error_of(response, 429)["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "7"
    assert_untouched(gateway, key_id, "1.00")


def test_failure_the_upstream_never_accepted_is_retried_under_one_hold(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"status": 500}, {"usage": {"prompt_tokens": 1000, "completion_tokens": 1000}})
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200, response.text
    assert len(fake.requests) == 2
    [row] = gateway.usage(key_id)
    assert row["request_id"] == response.headers["x-request-id"]
    # 1000 * 0.47/M + 1000 * 2.37/M, charged once
    assert row["cost_usd"] == "0.00284"
    assert gateway.key(key_id)["balance_usd"] == "0.99716"


def test_unreachable_upstream_is_502(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    dead_port = gateway.config["upstreams"][1]["base_url"].split(":")[-1].split("/")[0]
    with api_client(gateway, key) as http:
        plain = http.post("/v1/chat/completions", json=chat_body(model="dead-model"))
        streamed = http.post("/v1/chat/completions", json=chat_body(model="dead-model", stream=True))
    assert error_of(plain, 502)["type"] == "upstream_error"
    assert error_of(streamed, 502)["type"] == "upstream_error"
    assert dead_port not in plain.text
    assert_untouched(gateway, key_id, "1.00")


def test_upstream_silent_past_read_timeout_is_504(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue(*[{"delay_before_headers": FAULTS_READ_TIMEOUT + 0.5}] * 4)
    with api_client(gateway, key) as http:
        plain = http.post("/v1/chat/completions", json=chat_body())
        streamed = http.post("/v1/chat/completions", json=chat_body(stream=True))
    for response in (plain, streamed):
        error = error_of(response, 504)
        assert error["type"] == "timeout_error"
        assert error["code"] == "upstream_timeout"
    assert len(fake.requests) == 2  # the request was written: a read timeout is never retried
    # the upstream had both requests and works on them: each costs its prompt estimate
    assert_prompt_estimate_charged(gateway, key_id, count=2)
