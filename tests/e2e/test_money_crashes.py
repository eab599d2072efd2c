"""What was delivered is never lost, and nothing undelivered is charged: crashes, stalls and slow readers.

Real gateway processes on a real database: ``kill -9`` mid-stream and a restart (the checkpointed
output is charged), ``kill -9`` before the request reached the upstream (released), a client that
stops reading for longer than a hold's lease (charged the real usage, not a recovery estimate), and a
client that stops reading for longer than the write timeout (cut, settled for what was delivered).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from app.fake_upstream import FakeUpstreamThread
from app.money.tokens import text_tokens
from tests.support.backends import backend_overrides, database_url
from tests.support.gateway import (
    GatewayProcess,
    base_config,
    chat_body,
    deep_merge,
    free_port,
    settled_rows,
    wait_until,
)

LEASES = {"billing": {"hold_ttl_seconds": 3, "recovery_interval_seconds": 0.5, "checkpoint_interval_seconds": 1}}
WORDS = 400  # "wNNN " is 2 tokens


def gateway_config(workdir: Path, upstream_url: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config = deep_merge(base_config(upstream_url, database_url(workdir)), backend_overrides())
    config = deep_merge(config, LEASES)
    return deep_merge(config, extra or {})


def restart(workdir: Path, config: dict[str, Any]) -> GatewayProcess:
    """Another process on the same database (a new instance id: it never renews the dead one's leases)."""
    return GatewayProcess(workdir, config).start()


def open_raw_stream(
    gateway: GatewayProcess, key: str, body: dict[str, Any], *, rcvbuf: int | None = None
) -> socket.socket:
    """A chat stream on a raw socket (optionally with a tiny receive buffer), headers not yet read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", gateway.port))
    payload = orjson.dumps(body)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def read_all(sock: socket.socket, *, timeout: float = 30.0, on_data: Callable[[bytes], None] | None = None) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
        if on_data is not None:
            on_data(data)
    return b"".join(chunks)


def streamed_tokens(raw: bytes) -> int:
    """Output tokens of the content deltas in a raw (chunked) SSE body, counted as the gateway counts them."""
    tokens = 0
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {") and b'"content":"' in line:
            try:
                event = orjson.loads(line[len(b"data: ") :])
            except orjson.JSONDecodeError:
                continue  # a line cut by chunked framing
            for choice in event.get("choices", ()):
                tokens += text_tokens(choice.get("delta", {}).get("content") or "")
    return tokens


def test_kill_9_mid_stream_then_restart_charges_the_checkpointed_output(
    tmp_path: Path, fake: FakeUpstreamThread
) -> None:
    config = gateway_config(
        tmp_path, fake.url, {"models": [{**base_config(fake.url, "x")["models"][0], "max_output_tokens": 4000}]}
    )
    gateway = GatewayProcess(tmp_path, config).start()
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": [f"w{i:03d} " for i in range(WORDS)], "event_delay": 0.01, "usage": "omit"})
    sock = open_raw_stream(gateway, key, chat_body(stream=True))
    received = bytearray()

    def reader() -> None:
        read_all(sock, timeout=20, on_data=received.extend)

    thread = threading.Thread(target=reader)
    thread.start()
    wait_until(lambda: streamed_tokens(bytes(received)) >= 300, timeout=10)  # ~1.5 s of answer delivered
    time.sleep(1.5)  # more than a checkpoint interval: what was delivered by now is on disk
    delivered_before = streamed_tokens(bytes(received))
    gateway.kill()  # SIGKILL: no settlement runs
    thread.join(10)
    sock.close()
    survivor = restart(tmp_path, config)
    try:
        [row] = settled_rows(survivor, key_id, timeout=15)
        assert (row["status"], row["source"], row["partial"], row["estimated"]) == ("recovered", "recovery", True, True)
        assert row["completion_tokens"] >= delivered_before - 2 * 100, (row, delivered_before)  # at most ~1 s lost
        assert row["completion_tokens"] <= 2 * WORDS
        assert row["prompt_tokens"] > 0
        assert survivor.ledger()["balanced"] is True
    finally:
        survivor.terminate()


def test_kill_9_before_the_request_reached_the_upstream_charges_nothing(
    tmp_path: Path, fake: FakeUpstreamThread
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    detour = {
        "id": "detour",
        "targets": [{"upstream": "dead", "priority": 1}, {"upstream": "ark", "priority": 2}],
        "max_output_tokens": 1000,
        "price": {"input": 0.47, "output": 2.37},
    }
    extra = {
        "upstreams": [*base_config(fake.url, "x")["upstreams"], {"name": "dead", "base_url": closed, "api_key": "k"}],
        "models": [detour],
        "routing": {"max_attempts": 2, "backoff_seconds": 5, "breaker_failures": 1000},
    }
    config = gateway_config(tmp_path, fake.url, extra)
    gateway = GatewayProcess(tmp_path, config).start()
    key_id, key = gateway.create_key("1")
    sock = open_raw_stream(gateway, key, chat_body(model="detour"))
    time.sleep(2.0)  # the first target refused the connection; the gateway waits out its back-off
    gateway.kill()
    sock.close()
    survivor = restart(tmp_path, config)
    try:
        wait_until(lambda: survivor.key(key_id)["held_usd"] == "0.00", timeout=15)
        view = survivor.key(key_id)
        assert (view["balance_usd"], view["spent_usd"]) == ("1.00", "0.00"), view
        assert survivor.usage(key_id) == []
        assert fake.requests == []
        assert survivor.ledger()["balanced"] is True
    finally:
        survivor.terminate()


def test_a_stalled_reader_past_the_lease_is_charged_the_real_usage(tmp_path: Path, fake: FakeUpstreamThread) -> None:
    extra = {"models": [{**base_config(fake.url, "x")["models"][0], "max_output_tokens": 40_000}]}
    gateway = GatewayProcess(tmp_path, gateway_config(tmp_path, fake.url, extra)).start()
    try:
        key_id, key = gateway.create_key("1")
        words = [f"w{i:05d} " for i in range(15_000)]  # 30,000 tokens, ~120 KB of events
        usage = {"prompt_tokens": 5, "completion_tokens": 30_000}
        fake.enqueue({"content_chunks": words, "usage": usage})
        sock = open_raw_stream(gateway, key, chat_body(stream=True, max_tokens=40_000), rcvbuf=4096)
        sock.settimeout(10)
        assert sock.recv(12).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # three leases long: recovery runs every half second meanwhile
        raw = read_all(sock, timeout=20)
        sock.close()
        assert b"data: [DONE]" in raw
        assert streamed_tokens(raw) == 30_000
        [row] = settled_rows(gateway, key_id, timeout=10)
        assert (row["status"], row["source"], row["completion_tokens"], row["partial"]) == (
            "ok",
            "request",
            30_000,
            False,
        )
        assert row["estimated"] is False
        assert gateway.ledger()["balanced"] is True
    finally:
        gateway.terminate()


@contextmanager
def a_reader_that_never_reads(
    tmp_path: Path, fake: FakeUpstreamThread, script: dict[str, Any], *, max_tokens: int, balance: str
) -> Iterator[tuple[GatewayProcess, str, dict[str, Any]]]:
    """A stream whose client never reads a byte (a tiny receive buffer) on a gateway with a 1 s write
    timeout: the gateway, the key and the request's usage row, settled within 10 s."""
    extra = {
        "server": {"client_write_timeout_seconds": 1},
        "models": [{**base_config(fake.url, "x")["models"][0], "max_output_tokens": max_tokens}],
    }
    gateway = GatewayProcess(tmp_path, gateway_config(tmp_path, fake.url, extra)).start()
    try:
        key_id, key = gateway.create_key(balance)
        fake.enqueue(script)
        sock = open_raw_stream(gateway, key, chat_body(stream=True, max_tokens=max_tokens), rcvbuf=4096)
        started = time.monotonic()
        [row] = settled_rows(gateway, key_id, timeout=15)  # settled while the client still never read a byte
        assert time.monotonic() - started < 10
        sock.close()
        yield gateway, key_id, row
    finally:
        gateway.terminate()


def test_a_client_that_stops_reading_is_cut_after_the_write_timeout_and_billed_for_what_was_sent(
    tmp_path: Path, fake: FakeUpstreamThread
) -> None:
    script = {"content_chunks": ["x" * 4000] * 2000, "usage": "omit"}  # 8 MB: far more than the buffers
    with a_reader_that_never_reads(tmp_path, fake, script, max_tokens=400_000, balance="5") as (gateway, _, row):
        assert (row["status"], row["partial"], row["estimated"]) == ("client_stalled", True, True)
        assert 0 < row["completion_tokens"] < 2_000_000  # what was forwarded before the cut, not the whole answer
        assert gateway.ledger()["balanced"] is True


def test_a_client_that_stops_reading_on_the_streams_last_write_is_cut_after_the_write_timeout_too(
    tmp_path: Path, fake: FakeUpstreamThread
) -> None:
    script = {"content_chunks": ["x" * 3_000_000]}  # the whole answer in one write, larger than the buffers
    with a_reader_that_never_reads(tmp_path, fake, script, max_tokens=4_000_000, balance="100") as found:
        gateway, key_id, row = found
        assert row["status"] in ("ok", "client_stalled")  # the answer was whole when the last write stalled
        assert gateway.key(key_id)["held_usd"] == "0.00"
        assert gateway.ledger()["balanced"] is True


def test_kill_9_in_a_requests_first_checkpoint_interval_charges_its_prompt_estimate(
    tmp_path: Path, fake: FakeUpstreamThread
) -> None:
    slow_checkpoints = {"billing": {"checkpoint_interval_seconds": 3, "hold_ttl_seconds": 9}}  # a wide first interval
    config = gateway_config(tmp_path, fake.url, slow_checkpoints)
    gateway = GatewayProcess(tmp_path, config).start()
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": [f"w{i:03d} " for i in range(WORDS)], "event_delay": 0.01, "usage": "omit"})
    sock = open_raw_stream(gateway, key, chat_body(stream=True))
    received = bytearray()
    thread = threading.Thread(target=lambda: read_all(sock, timeout=20, on_data=received.extend))
    thread.start()
    wait_until(lambda: streamed_tokens(bytes(received)) >= 20, timeout=10)  # under a checkpoint interval in
    gateway.kill()
    thread.join(10)
    sock.close()
    survivor = restart(tmp_path, config)
    try:
        [row] = settled_rows(survivor, key_id, timeout=20)
        assert (row["status"], row["source"]) == ("recovered", "recovery")
        assert row["prompt_tokens"] > 0
        assert survivor.key(key_id)["spent_usd"] != "0.00"
        assert len(fake.requests) == 1  # the upstream had the request
        assert survivor.ledger()["balanced"] is True
    finally:
        survivor.terminate()
