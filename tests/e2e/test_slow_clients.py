"""Slow and hostile clients hold no resources for free (issue 11), and every request leaves one log line.

- The per-IP limit is checked before the body is read: a flooding client gets 429 at once, however
  large a body it announces.
- A body that does not arrive within ``server.body_read_timeout_seconds`` is a 408.
- A body announced larger than ``server.max_body_bytes`` is a 413 before it is read.
- Accepted and refused requests alike get one access line with id, status, code, key id (never the
  key), client address, latency; billed ones tokens and cost too.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import GatewayProcess, api_client, chat_body, dedicated_gateway, wait_until

BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def slow_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[GatewayProcess]:
    overrides = {
        "server": {"body_read_timeout_seconds": BODY_TIMEOUT, "max_body_bytes": 100_000},
        "limits": {"per_ip": {"requests": 3, "window_seconds": 60}},
        "logging": {"format": "json"},
    }
    with dedicated_gateway(tmp_path_factory.mktemp("slow"), upstream.url, overrides) as gateway:
        yield gateway


def raw_request(
    gateway: GatewayProcess, head: str, body: bytes = b"", *, wait: float = 10.0
) -> tuple[int, bytes, float]:
    """Send ``head`` (and ``body``), then read the answer; (status, body, seconds taken)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=wait) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        took = 0.0
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            received += data
            took = took or time.monotonic() - started  # the first byte of the answer
    status = int(received.split(b" ", 2)[1]) if received else 0
    return status, received.partition(b"\r\n\r\n")[2], took


def post_head(length: int, *, client: str, key: str | None = None) -> str:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
        f"X-Forwarded-For: {client}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )


def test_a_body_that_never_arrives_is_a_408_after_the_read_deadline(slow_gateway: GatewayProcess) -> None:
    _, key = slow_gateway.create_key("1")
    status, body, took = raw_request(slow_gateway, post_head(5000, client="10.9.0.1", key=key), b'{"model":')
    assert status == 408
    assert orjson.loads(body)["error"]["code"] == "request_timeout"
    assert BODY_TIMEOUT * 0.8 <= took < BODY_TIMEOUT + 3


def test_a_flooding_address_is_refused_before_its_body_is_read(slow_gateway: GatewayProcess) -> None:
    for _ in range(3):  # the window's allowance
        raw_request(slow_gateway, post_head(2, client="10.9.0.2"), b"{}")
    status, _, took = raw_request(slow_gateway, post_head(90_000, client="10.9.0.2"))  # announces, never sends
    assert status == 429
    assert took < BODY_TIMEOUT * 0.8  # answered at once, not after waiting for the body


def test_a_body_announced_above_the_cap_is_413_before_it_is_read(slow_gateway: GatewayProcess) -> None:
    _, key = slow_gateway.create_key("1")
    status, _, took = raw_request(slow_gateway, post_head(10_000_000, client="10.9.0.3", key=key))
    assert status == 413
    assert took < BODY_TIMEOUT * 0.8


def test_every_request_accepted_or_refused_leaves_one_access_line(
    slow_gateway: GatewayProcess, fake: FakeUpstreamThread, tmp_path: Path
) -> None:
    key_id, key = slow_gateway.create_key("1")
    headers = {"x-forwarded-for": "10.9.0.4"}
    with api_client(slow_gateway, key) as http:
        ok = http.post("/v1/chat/completions", json=chat_body(), headers=headers)
        missing = http.post("/v1/chat/completions", json=chat_body(model="no-such-model"), headers=headers)
    with api_client(slow_gateway, "sk-wrong") as http:
        unauthorised = http.post("/v1/chat/completions", json=chat_body(), headers=headers)
    ids = {r.headers["x-request-id"]: r.status_code for r in (ok, missing, unauthorised)}
    assert sorted(ids.values()) == [200, 401, 404]

    def lines() -> dict[str, dict[str, object]]:
        found = {}
        for line in slow_gateway.logs().splitlines():
            if line.startswith("{") and '"logger":"seedgate.access"' in line:
                entry = orjson.loads(line)
                found[str(entry["request_id"])] = entry
        return found if set(ids) <= set(found) else {}

    access = wait_until(lines, timeout=5)
    for request_id, status in ids.items():
        entry = access[request_id]
        assert entry["status"] == status
        assert entry["client"] == "10.9.0.4"
        assert isinstance(entry["latency_ms"], float)
    assert access[ok.headers["x-request-id"]]["key_id"] == key_id
    assert int(str(access[ok.headers["x-request-id"]]["cost_units"])) > 0
    assert access[missing.headers["x-request-id"]]["code"] == "model_not_found"
    assert access[unauthorised.headers["x-request-id"]]["code"] == "invalid_api_key"
    assert key not in slow_gateway.logs()
