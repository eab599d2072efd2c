"""Upstream failures around a stream.

Before the first event the client gets a real HTTP error in JSON (never an empty 200 stream) and pays
nothing. After it, the stream ends with a ``data: {"error": ...}`` event that the SDK raises, and the
request is billed once from what was forwarded, marked partial.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import orjson
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import (
    ERROR_KEYS,
    FAULTS_READ_TIMEOUT,
    HELLO,
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
    settled_rows,
    sse_data,
)

READ_TIMEOUT = FAULTS_READ_TIMEOUT
HEARTBEAT = 0.2


@pytest.fixture(scope="module")
def faults_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("stream-faults")
    overrides = {**faults_config(upstream.url), "server": {"heartbeat_seconds": HEARTBEAT}}
    with dedicated_gateway(workdir, upstream.url, overrides) as gateway:
        yield gateway


@pytest.fixture
def gateway(faults_gateway: GatewayProcess, fake: FakeUpstreamThread) -> GatewayProcess:
    """This module's gateway replaces the shared one: its failures must not trip the shared breaker."""
    return faults_gateway


@pytest.mark.parametrize(
    ("scripts", "status"),
    [
        ([{"status": 500}, {"status": 500}], 502),
        ([{"status": 503}, {"status": 503}], 503),
        ([{"reset_after_events": 0}], 502),
        ([{"delay_before_headers": READ_TIMEOUT + 1}], 504),
    ],
    ids=["http-500", "http-503", "reset-before-first-event", "silent-past-read-timeout"],
)
def test_failure_before_the_first_event_is_a_json_error_not_a_stream(
    gateway: GatewayProcess, fake: FakeUpstreamThread, scripts: list[dict[str, Any]], status: int
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue(*scripts)
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    error_of(response, status)
    assert "text/event-stream" not in response.headers["content-type"]
    assert len(fake.requests) == len(scripts)
    if status == 504:  # the upstream had the request and kept it: it bills the operator, so the key pays the prompt
        assert_prompt_estimate_charged(gateway, key_id)
    else:
        assert_untouched(gateway, key_id, "1.00")


def test_sdk_gets_a_status_error_when_the_stream_fails_before_starting(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"status": 500}, {"status": 500})
    with openai_client(gateway, key) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO, stream=True)
    assert caught.value.status_code == 502
    assert_untouched(gateway, key_id, "1.00")


MID_STREAM_FAULTS: dict[str, dict[str, Any]] = {
    "reset": {"content_chunks": ["one ", "two ", "three ", "four"], "reset_after_events": 3},
    "error-event": {
        "content_chunks": ["one ", "two "],
        "stream_error": {"message": f"engine exploded, key {UPSTREAM_KEY}", "type": "server_error", "code": "E1"},
    },
}


@pytest.mark.parametrize("fault", sorted(MID_STREAM_FAULTS))
def test_failure_mid_stream_ends_with_an_error_event_and_one_partial_row(
    gateway: GatewayProcess, fake: FakeUpstreamThread, fault: str
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue(MID_STREAM_FAULTS[fault])
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    assert response.status_code == 200
    assert UPSTREAM_KEY not in response.text
    payloads = sse_data(response.text)
    assert "[DONE]" not in payloads
    last = orjson.loads(payloads[-1])
    assert set(last) == {"error"}
    assert ERROR_KEYS <= set(last["error"])
    assert last["error"]["code"] == "upstream_error"
    assert any("one " in p for p in payloads[:-1])  # what arrived before the failure was relayed
    [row] = settled_rows(gateway, key_id)
    assert row["partial"] is True
    assert row["estimated"] is True
    assert row["status"] == "upstream_error"
    assert row["completion_tokens"] >= 1
    assert len(fake.requests) == 1  # content was sent: never retried
    view = gateway.key(key_id)
    assert view["held_usd"] == "0.00"
    assert Decimal(view["balance_usd"]) == 1 - Decimal(row["cost_usd"])


def test_silence_after_the_first_event_ends_with_a_timeout_event_and_charges_the_prompt_estimate(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    # the role chunk comes at once, then every later event is later than the read timeout
    fake.enqueue({"content_chunks": ["never ", "seen"], "event_delay": READ_TIMEOUT + 1})
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    assert response.status_code == 200
    last = orjson.loads(sse_data(response.text)[-1])
    assert last["error"]["code"] == "upstream_timeout"
    assert "never" not in response.text
    # the upstream started answering, then went silent: it bills the operator for the prompt at least
    assert_prompt_estimate_charged(gateway, key_id)


def _contents(stream: openai.Stream[Any], into: list[str]) -> None:
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            into.append(chunk.choices[0].delta.content)


def test_sdk_raises_when_the_stream_breaks_mid_way(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue(MID_STREAM_FAULTS["reset"])
    received: list[str] = []
    with openai_client(gateway, key) as client:
        stream = client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError):
            _contents(stream, received)
    assert received == ["one ", "two "]
    [row] = settled_rows(gateway, key_id)
    assert row["partial"] is True
    assert gateway.ledger()["balanced"] is True


def test_upstream_that_closes_without_done_after_a_full_answer_completes(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["all ", "there"], "no_done": True, "usage": {"prompt_tokens": 3}})
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    assert sse_data(response.text)[-1] == "[DONE]"
    [row] = settled_rows(gateway, key_id)
    assert (row["partial"], row["estimated"], row["status"], row["prompt_tokens"]) == (False, False, "ok", 3)


def test_keepalive_comments_flow_while_the_upstream_thinks(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    # each event comes after 0.45 s: inside the read timeout, but longer than the heartbeat interval
    script = {"content_chunks": ["slow answer"], "event_delay": 0.45}
    fake.enqueue(script, script)
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    assert response.text.count(": keepalive\n\n") >= 3
    assert sse_data(response.text)[-1] == "[DONE]"
    with openai_client(gateway, key) as client:
        chunks = list(client.chat.completions.create(model="pro-latest", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "slow answer"
