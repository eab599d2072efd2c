"""Idle and total timeouts towards the upstream, and heartbeats towards the client, through a running gateway.

A request the upstream took is never sent again: a silence before the answer is a 504 after one
attempt; a silence or an overrun inside a stream ends it with an error event. What the client
already received is billed as one partial row; a request that produced no content is released.
A stream that is only slow stays open: the client gets ``: keepalive`` comments meanwhile.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import (
    HELLO,
    UPSTREAM_KEY,
    GatewayProcess,
    api_client,
    assert_prompt_estimate_charged,
    dedicated_gateway,
    sdk_stream,
    settled_rows,
    sse_payloads,
    streamed_content,
)

IDLE = 0.5  # the per-model read timeout of "tight" and "stall"; the upstreams' own is 5 s
HEARTBEAT = 0.3
TOTAL = 1.2  # the per-model total deadline of "short-total"
PRICE = {"input": 0.47, "output": 2.37}


class StallingUpstream:
    """Answers every request with a stream head and two content events, then says nothing more.

    The fake upstream's ``event_delay`` is the same before every event, so it cannot go silent
    after some content; this one can. It serves one connection at a time, on loopback only.
    """

    HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="stalling-upstream", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    self._answer(conn)
                except OSError:
                    pass  # the gateway hung up: exactly what a stalled stream ends with

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        data = self._read(conn, lambda buf: b"\r\n\r\n" in buf, b"")
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
        length = int(match.group(1)) if match else 0
        self._read(conn, lambda buf: len(buf) >= length, body)
        self.requests += 1
        conn.sendall(self.HEAD + b"".join(self._chunk(event) for event in self._events()))
        self._read(conn, lambda buf: False, b"")  # silent until the gateway gives up and closes

    def _read(self, conn: socket.socket, enough: Any, buf: bytes) -> bytes:
        deadline = time.monotonic() + 10
        while not enough(buf) and not self._stop.is_set() and time.monotonic() < deadline:
            try:
                piece = conn.recv(65536)
            except TimeoutError:
                continue
            if not piece:
                break
            buf += piece
        return buf

    @staticmethod
    def _events() -> list[bytes]:
        base = {"id": "chatcmpl-stall", "object": "chat.completion.chunk", "created": 1, "model": "stall-up"}
        deltas = [{"role": "assistant", "content": ""}, {"content": "Hello "}, {"content": "world"}]
        return [
            orjson.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) for delta in deltas
        ]

    @staticmethod
    def _chunk(event: bytes) -> bytes:
        block = b"data: " + event + b"\n\n"
        return b"%x\r\n%b\r\n" % (len(block), block)


@pytest.fixture(scope="module")
def stalling() -> Iterator[StallingUpstream]:
    server = StallingUpstream()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def timeouts_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread, stalling: StallingUpstream
) -> Iterator[GatewayProcess]:
    ark = {"name": "ark", "base_url": upstream.url, "api_key": UPSTREAM_KEY, "read_timeout": 5}
    stall = {"name": "stall", "base_url": stalling.url, "api_key": UPSTREAM_KEY, "read_timeout": 5}
    overrides = {
        "upstreams": [ark, stall],
        "models": [
            {"id": "patient", "upstream": "ark", "max_output_tokens": 1000, "price": PRICE},
            {"id": "tight", "upstream": "ark", "read_timeout": IDLE, "max_output_tokens": 1000, "price": PRICE},
            {"id": "short-total", "upstream": "ark", "total_timeout": TOTAL, "max_output_tokens": 1000, "price": PRICE},
            {"id": "stall", "upstream": "stall", "read_timeout": IDLE, "max_output_tokens": 1000, "price": PRICE},
        ],
        "routing": {"max_attempts": 3, "backoff_seconds": 0.05, "breaker_failures": 1000},
        "server": {"heartbeat_seconds": HEARTBEAT},
    }
    with dedicated_gateway(tmp_path_factory.mktemp("timeouts"), upstream.url, overrides) as gateway:
        yield gateway


@pytest.fixture
def gateway(timeouts_gateway: GatewayProcess, fake: FakeUpstreamThread) -> GatewayProcess:
    return timeouts_gateway


def timed_chat(gateway: GatewayProcess, key: str, model: str, *, stream: bool) -> tuple[httpx.Response, str, float]:
    """(response, whole body, seconds until the body ended)."""
    started = time.monotonic()
    body = {"model": model, "messages": HELLO, "stream": stream}
    with api_client(gateway, key) as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        text = b"".join(response.iter_bytes()).decode()
    return response, text, time.monotonic() - started


def timeout_error_of(response: httpx.Response, text: str) -> None:
    """A 504 in the OpenAI envelope, sent before any stream byte."""
    assert response.status_code == 504, text
    assert response.headers["content-type"].startswith("application/json")
    assert orjson.loads(text)["error"]["code"] == "upstream_timeout"
    assert "x-seedgate-attempts" not in response.headers


def partial_row(gateway: GatewayProcess, key_id: str) -> dict[str, Any]:
    [row] = settled_rows(gateway, key_id)
    assert (row["status"], row["partial"], row["estimated"]) == ("upstream_timeout", True, True), row
    assert row["completion_tokens"] > 0
    key = gateway.key(key_id)
    assert key["held_usd"] == "0.00"
    assert key["spent_usd"] == row["cost_usd"] != "0.00"
    assert gateway.ledger()["balanced"] is True
    return row


# --- silence before the answer ------------------------------------------------------------------


def test_a_hang_hits_the_idle_timeout_and_is_not_retried(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"hang": True})
    response, text, took = timed_chat(gateway, key, "tight", stream=False)
    timeout_error_of(response, text)
    assert IDLE * 0.9 <= took < 4.0  # the model's 0.5 s, not the upstream's 5 s
    assert len(fake.requests) == 1
    assert_prompt_estimate_charged(gateway, key_id)  # the upstream had the request: the operator pays for it


def test_headers_later_than_the_idle_timeout_fail_a_stream_before_its_first_byte(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"delay_before_headers": IDLE * 3})
    response, text, _ = timed_chat(gateway, key, "tight", stream=True)
    timeout_error_of(response, text)  # headers at 1.5 s would have made it a 200
    assert len(fake.requests) == 1
    assert_prompt_estimate_charged(gateway, key_id)  # the upstream had the request: the operator pays for it


def test_the_total_deadline_bounds_the_wait_for_the_answer(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"delay_before_headers": TOTAL + 2.0})  # under the 5 s idle timeout, over the total
    response, text, _ = timed_chat(gateway, key, "short-total", stream=False)
    timeout_error_of(response, text)  # the answer at 3.2 s would have made it a 200
    assert len(fake.requests) == 1
    assert_prompt_estimate_charged(gateway, key_id)  # the upstream had the request: the operator pays for it


# --- silence inside a stream ---------------------------------------------------------------------


def test_silence_mid_stream_ends_in_an_error_event_with_a_partial_row(
    gateway: GatewayProcess, stalling: StallingUpstream
) -> None:
    key_id, key = gateway.create_key("1")
    before = stalling.requests
    response, text, took = timed_chat(gateway, key, "stall", stream=True)
    assert response.status_code == 200
    events = sse_payloads(text)
    assert streamed_content(events) == "Hello world"
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert "[DONE]" not in events
    assert IDLE * 0.9 <= took < IDLE + 3.0
    assert stalling.requests == before + 1
    partial_row(gateway, key_id)


def test_silence_after_the_role_chunk_ends_the_stream_and_charges_the_prompt_estimate(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"event_delay": IDLE * 3})  # only the role chunk arrives in time
    response, text, _ = timed_chat(gateway, key, "tight", stream=True)
    assert response.status_code == 200
    events = sse_payloads(text)
    assert streamed_content(events) == ""
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert len(fake.requests) == 1
    # the upstream accepted the request, then timed out: at least the prompt estimate (docs/reliability.md)
    assert_prompt_estimate_charged(gateway, key_id)


def test_the_total_deadline_cuts_a_slow_stream_with_a_partial_row(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    words = [f"w{i} " for i in range(12)]  # 0.25 s apart: ~3.5 s in all, far over the 1.2 s total
    fake.enqueue({"event_delay": 0.25, "content_chunks": words})
    response, text, took = timed_chat(gateway, key, "short-total", stream=True)
    assert response.status_code == 200
    events = sse_payloads(text)
    received = streamed_content(events)
    assert received
    assert "".join(words).startswith(received)
    assert received != "".join(words)
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert took < TOTAL + 1.8  # the whole answer takes ~3.2 s
    assert len(fake.requests) == 1
    partial_row(gateway, key_id)


# --- heartbeats ------------------------------------------------------------------------------------


def test_a_slow_stream_gets_keepalive_comments_and_the_sdk_still_parses_it(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    # three events one second apart: role chunk, "tick tock", finish (usage and [DONE] left out to stay short)
    script = {"event_delay": 1.0, "content_chunks": ["tick tock"], "usage": "omit", "no_done": True}
    fake.enqueue(script, script)
    with ThreadPoolExecutor(2) as pool:  # both at once: one read raw, one through the SDK
        raw = pool.submit(timed_chat, gateway, key, "patient", stream=True)
        sdk = pool.submit(sdk_stream, gateway, key, "patient")
        response, text, _ = raw.result(timeout=20)
        content, finish = sdk.result(timeout=20)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    # two silent seconds at a 0.3 s heartbeat: at least two keepalives in each gap
    assert text.split("\n").count(": keepalive") >= 4, text
    assert streamed_content(sse_payloads(text)) == "tick tock"
    assert (content, finish) == ("tick tock", "stop")
    assert len(fake.requests) == 2
    rows = settled_rows(gateway, key_id, count=2)
    assert all((row["status"], row["partial"]) == ("ok", False) for row in rows), rows
