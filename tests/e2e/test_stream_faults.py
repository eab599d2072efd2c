"""Broken and odd upstream streams, through a running gateway.

Each test says what the client receives, how many attempts the upstream saw, and what was billed:
exactly one usage row (marked partial when the answer broke off) and never a hold left behind.
Every fault here comes after the upstream accepted the request, so none counts against a circuit
breaker and the shared gateway serves. Faults before acceptance are in ``test_failover.py``, silences
and heartbeats in ``test_timeouts.py``.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from app.fake_upstream import FakeUpstreamThread
from app.fake_upstream.script import DEFAULT_CONTENT
from tests.support.gateway import (
    UPSTREAM_KEY,
    GatewayProcess,
    api_client,
    chat_body,
    sdk_stream,
    settled_rows,
    sse_payloads,
    streamed_content,
)

USAGE = {"prompt_tokens": 1000, "completion_tokens": 800}
COST = "0.002366"  # 1000 x 0.47/M + 800 x 2.37/M (the output cap is 1000) on doubao-seed-2.0-pro
MODEL = "doubao-seed-2.0-pro"


def raw_stream(gateway: GatewayProcess, key: str, **fields: Any) -> tuple[int, str, str]:
    """(status, content type, whole body) of a streamed chat request read as raw bytes."""
    with (
        api_client(gateway, key) as http,
        http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, **fields)) as response,
    ):
        body = b"".join(response.iter_bytes())
        return response.status_code, response.headers["content-type"], body.decode()


def complete_row(gateway: GatewayProcess, key_id: str) -> dict[str, Any]:
    """The one row of an answer that completed with ``USAGE``; nothing held, the ledger balanced."""
    [row] = settled_rows(gateway, key_id)
    assert (row["status"], row["partial"], row["estimated"]) == ("ok", False, False), row
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (1000, 800, COST), row
    assert gateway.ledger()["balanced"] is True
    return row


def partial_row(gateway: GatewayProcess, key_id: str, status: str) -> dict[str, Any]:
    """The one row of an answer that broke off: charged from the estimate and the forwarded text."""
    [row] = settled_rows(gateway, key_id)
    assert (row["status"], row["partial"], row["estimated"]) == (status, True, True), row
    assert row["completion_tokens"] > 0
    key = gateway.key(key_id)
    assert key["held_usd"] == "0.00"
    assert key["spent_usd"] == row["cost_usd"] != "0.00"
    assert gateway.ledger()["balanced"] is True
    return row


# --- broken streams --------------------------------------------------------------------------------


def test_a_reset_mid_stream_ends_in_an_error_event_and_a_partial_row(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"reset_after_events": 3, "usage": USAGE})  # role chunk, "Hello ", "from ", then RST
    status, _, body = raw_stream(gateway, key)
    assert status == 200
    payloads = sse_payloads(body)
    assert streamed_content(payloads) == "Hello from "
    assert payloads[-1]["error"]["code"] == "upstream_error"
    assert "[DONE]" not in payloads
    assert len(fake.requests) == 1  # content was sent: never retried
    partial_row(gateway, key_id, "upstream_error")


def test_a_reset_mid_stream_is_an_api_error_in_the_sdk(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"reset_after_events": 3})
    with pytest.raises(openai.APIError, match="broke off"):
        sdk_stream(gateway, key, MODEL)
    assert len(fake.requests) == 1
    partial_row(gateway, key_id, "upstream_error")


def test_an_upstream_error_event_mid_stream_is_relayed_without_its_message(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    leak = {"message": f"internal failure, key {UPSTREAM_KEY}", "type": "server_error", "code": "InternalError"}
    fake.enqueue({"content_chunks": ["par", "tial"], "stream_error": leak})
    status, _, body = raw_stream(gateway, key)
    assert status == 200
    payloads = sse_payloads(body)
    assert streamed_content(payloads) == "partial"
    assert payloads[-1]["error"]["type"] == "upstream_error"
    assert UPSTREAM_KEY not in body
    assert "internal failure" not in body
    assert len(fake.requests) == 1
    partial_row(gateway, key_id, "upstream_error")


# --- odd but valid streams ---------------------------------------------------------------------------------


def test_a_malformed_event_in_the_middle_is_skipped(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"malformed_after_events": 2, "usage": USAGE})
    text, finish = sdk_stream(gateway, key, MODEL)
    assert (text, finish) == (DEFAULT_CONTENT, "stop")
    assert len(fake.requests) == 1
    complete_row(gateway, key_id)


@pytest.mark.parametrize("line_ending", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_other_sse_line_endings_are_understood(
    gateway: GatewayProcess, fake: FakeUpstreamThread, line_ending: str
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"line_ending": line_ending, "content_chunks": ["line ", "endings"], "usage": USAGE})
    status, _, body = raw_stream(gateway, key)
    assert status == 200
    payloads = sse_payloads(body)
    assert streamed_content(payloads) == "line endings"
    assert payloads[-1] == "[DONE]"
    complete_row(gateway, key_id)


def test_one_byte_network_chunks_keep_multibyte_characters_whole(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    pieces = ["Grüße, ", "世界 ", "🎉🚀 ", "naïve — ", "ok"]
    fake.enqueue({"byte_by_byte": True, "content_chunks": pieces, "usage": USAGE})
    text, finish = sdk_stream(gateway, key, MODEL)
    assert text == "".join(pieces)
    assert finish == "stop"
    complete_row(gateway, key_id)


def test_a_stream_without_done_but_with_a_finish_reason_completes(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"no_done": True, "content_chunks": ["no ", "done"], "usage": USAGE})
    status, _, body = raw_stream(gateway, key)
    assert status == 200
    payloads = sse_payloads(body)
    assert streamed_content(payloads) == "no done"
    assert payloads[-1] == "[DONE]"  # the gateway ends the stream properly for the client
    assert not any(isinstance(p, dict) and "error" in p for p in payloads)
    complete_row(gateway, key_id)


def test_a_stream_that_ends_without_finish_reason_or_done_is_an_error(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    # the upstream closes cleanly after the content: no finish_reason, no usage, no [DONE]
    fake.enqueue({"content_chunks": ["cut ", "short"], "finish_reason": "", "usage": "omit", "no_done": True})
    status, _, body = raw_stream(gateway, key)
    assert status == 200
    payloads = sse_payloads(body)
    assert streamed_content(payloads) == "cut short"
    assert payloads[-1]["error"]["code"] == "upstream_error"
    partial_row(gateway, key_id, "upstream_error")


def test_a_huge_non_stream_answer_passes_through_intact_and_is_billed(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"body_padding_bytes": 2_000_000, "usage": USAGE})
    with api_client(gateway, key, timeout=30) as http:
        response = http.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200
    assert len(response.content) >= 2_000_000
    content = response.json()["choices"][0]["message"]["content"]
    padding = len(content) - len(DEFAULT_CONTENT)
    assert padding > 1_900_000
    assert content == DEFAULT_CONTENT + "." * padding
    assert len(fake.requests) == 1
    complete_row(gateway, key_id)
