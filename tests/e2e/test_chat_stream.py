"""Streams: the usage chunk only for clients that ask, and a client that leaves mid-stream still pays once."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import orjson
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import (
    HELLO,
    GatewayProcess,
    api_client,
    chat_body,
    openai_client,
    settled_rows,
    sse_data,
)

USAGE = {"prompt_tokens": 10, "completion_tokens": 20}


def test_include_usage_gives_the_sdk_one_usage_chunk_at_the_end(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["a", "b"], "usage": USAGE})
    with openai_client(gateway, key) as client:
        stream = client.chat.completions.create(
            model="doubao-seed-2.0-pro", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    *answer, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (10, 20)
    assert all(chunk.choices and chunk.usage is None for chunk in answer)
    assert "".join(c.choices[0].delta.content or "" for c in answer) == "ab"
    [row] = gateway.usage(key_id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["partial"]) == (10, 20, False)


@pytest.mark.parametrize("options", [None, {"include_usage": False}])
def test_without_include_usage_no_chunk_carries_usage_but_the_request_is_billed(
    gateway: GatewayProcess, fake: FakeUpstreamThread, options: dict[str, bool] | None
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["x", "y", "z"], "usage": USAGE})
    body = chat_body(stream=True, **({"stream_options": options} if options is not None else {}))
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    *payloads, done = sse_data(response.text)
    assert done == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads]
    assert chunks
    for chunk in chunks:
        assert "usage" not in chunk, chunk
        assert chunk["choices"], chunk
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "xyz"
    [sent] = fake.requests
    assert sent["body"]["stream_options"] == {"include_usage": True}
    [row] = gateway.usage(key_id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (10, 20, False)
    # 10 * 0.47/M + 20 * 2.37/M
    assert row["cost_usd"] == "0.0000521"


def test_stream_events_are_compact_sse_data_lines(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["one", " two"], "line_ending": "\r\n"})
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    blocks = response.text.split("\n\n")
    assert blocks[-1] == ""
    for block in blocks[:-1]:
        assert block.startswith("data: "), block
        assert "\n" not in block
        assert "\r" not in block


def test_stream_is_relayed_as_it_arrives_not_buffered(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["a", "b", "c", "d"], "event_delay": 0.3})
    arrivals: list[tuple[float, str]] = []
    with api_client(gateway, key) as http:
        started = time.monotonic()
        with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.monotonic() - started, line))
    content_at = [at for at, line in arrivals if '"content":"' in line and '"content":""' not in line]
    assert len(content_at) == 4
    # the upstream spreads them over 0.9 s; a buffering gateway would deliver them together at the end
    assert content_at[-1] - content_at[0] > 0.5, content_at


@pytest.mark.parametrize(
    "framing",
    [{"line_ending": "\r"}, {"line_ending": "\r\n", "comment_every": 2}, {"byte_by_byte": True}],
    ids=["cr", "crlf-comments", "byte-by-byte"],
)
def test_upstream_framing_never_changes_what_the_sdk_reads(
    gateway: GatewayProcess, fake: FakeUpstreamThread, framing: dict[str, object]
) -> None:
    key_id, key = gateway.create_key("1")
    pieces = ["中文", " émoji 😀", " done"]
    fake.enqueue({"content_chunks": pieces, "usage": USAGE, **framing})
    with openai_client(gateway, key) as client:
        chunks = list(client.chat.completions.create(model="pro-latest", messages=HELLO, stream=True))
    assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == pieces
    [row] = gateway.usage(key_id)
    assert (row["completion_tokens"], row["status"]) == (20, "ok")


def test_malformed_upstream_event_is_skipped_and_the_stream_completes(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["a", "b", "c"], "malformed_after_events": 2, "usage": USAGE})
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    payloads = sse_data(response.text)
    assert payloads[-1] == "[DONE]"
    assert "{not json" not in response.text
    assert "".join(orjson.loads(p)["choices"][0]["delta"].get("content") or "" for p in payloads[:-1]) == "abc"
    [row] = gateway.usage(key_id)
    assert (row["status"], row["partial"]) == ("ok", False)


def test_client_disconnect_mid_stream_leaves_one_partial_estimated_row_and_no_hold(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    # 200 events 50 ms apart: the upstream alone would take 10 s, and its usage only comes at the end
    fake.enqueue({"content_chunks": ["word "] * 200, "event_delay": 0.05, "usage": USAGE})
    seen: list[str] = []
    with api_client(gateway, key) as http:
        with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen.append(line)
                if len(seen) >= 4:
                    break
        left_at = time.monotonic()
        [row] = settled_rows(gateway, key_id, timeout=4)
    assert time.monotonic() - left_at < 4  # settled long before the upstream would have finished
    assert row["partial"] is True
    assert row["estimated"] is True
    assert row["status"] == "client_disconnected"
    assert row["stream"] is True
    assert 1 <= row["completion_tokens"] < 200
    assert Decimal(row["cost_usd"]) > 0
    view = gateway.key(key_id)
    assert view["held_usd"] == "0.00"
    assert Decimal(view["balance_usd"]) == 1 - Decimal(row["cost_usd"])
    time.sleep(0.3)
    assert len(gateway.usage(key_id)) == 1  # and it stays one
    assert gateway.ledger()["balanced"] is True


def test_client_disconnect_before_any_content_still_settles(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["slow "] * 50, "event_delay": 0.2})
    with api_client(gateway, key) as http:
        with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as response:
            assert response.status_code == 200
            next(response.iter_lines())
    [row] = settled_rows(gateway, key_id, timeout=4)
    assert row["partial"] is True
    assert gateway.key(key_id)["held_usd"] == "0.00"
    assert gateway.ledger()["balanced"] is True


@pytest.mark.parametrize("stream", [False, True])
def test_client_that_gives_up_before_the_answer_starts_leaves_no_hold(
    gateway: GatewayProcess, fake: FakeUpstreamThread, stream: bool
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"delay_before_headers": 0.8, "content_chunks": ["late "] * 20, "event_delay": 0.05})
    with api_client(gateway, key, timeout=0.2) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=chat_body(stream=stream))
    # the upstream still answers: the request is billed once (in full or as partial), never held forever
    [row] = settled_rows(gateway, key_id, timeout=4)
    assert Decimal(gateway.key(key_id)["balance_usd"]) == 1 - Decimal(row["cost_usd"])
    assert gateway.ledger()["balanced"] is True
