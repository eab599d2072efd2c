"""The production nginx config (``deploy/nginx.conf``) on loopback in front of two gateways.

nginx replaces X-Forwarded-For with the address it saw, and the gateways trust it only from
127.0.0.1. Here the client is on 127.0.0.1 too, so the address the gateways key per-IP limits on is
127.0.0.1 whatever the client writes in its own X-Forwarded-For -- which is the real client address.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.scaleout.conftest import StartCluster
from tests.support.gateway import GatewayProcess, chat_body, deep_merge, error_of
from tests.support.nginx import NginxProcess

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

BEHIND_PROXY = {"server": {"trusted_proxies": ["127.0.0.1"]}}
FIVE_PER_MINUTE = {"limits": {"per_ip": {"requests": 5, "window_seconds": 60}}}
CHUNKS = ["one ", "two ", "three ", "four ", "five"]
EVENT_DELAY = 0.3

StartProxied = Callable[[dict[str, Any]], tuple[NginxProcess, list[GatewayProcess]]]


@pytest.fixture
def start_proxied(start_cluster: StartCluster, tmp_path: Path) -> Iterator[StartProxied]:
    """Two gateways (trusting 127.0.0.1 as proxy, plus ``overrides``) behind one nginx."""
    started: list[NginxProcess] = []

    def start(overrides: dict[str, Any]) -> tuple[NginxProcess, list[GatewayProcess]]:
        gateways = start_cluster(deep_merge(BEHIND_PROXY, overrides))
        nginx = NginxProcess(tmp_path, [f"127.0.0.1:{gateway.port}" for gateway in gateways])
        started.append(nginx)
        return nginx.start(), gateways

    try:
        yield start
    finally:
        for nginx in started:
            nginx.stop()


def client(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=20)


def content_of(event: bytes) -> str:
    """The text delta of one SSE event from the gateway ("" for keepalives, role and usage chunks)."""
    for line in event.splitlines():
        if line.startswith(b"data: {"):
            choices = orjson.loads(line[len(b"data: ") :]).get("choices") or [{}]
            content = choices[0].get("delta", {}).get("content")
            return content if isinstance(content, str) else ""
    return ""


def test_a_stream_through_nginx_arrives_incrementally(start_proxied: StartProxied, fake: FakeUpstreamThread) -> None:
    nginx, (gateway, _) = start_proxied({})
    _, key = gateway.create_key("10")
    fake.enqueue({"content_chunks": CHUNKS, "event_delay": EVENT_DELAY})

    arrivals: list[tuple[float, str]] = []
    buffer = b""
    with (
        client(nginx.base_url, key) as http,
        http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["server"].startswith("nginx"), response.headers  # really went through nginx
        assert response.headers["content-type"].startswith("text/event-stream")
        for raw in response.iter_raw():
            now = time.monotonic()
            *events, buffer = (buffer + raw).replace(b"\r\n", b"\n").split(b"\n\n")
            arrivals.extend((now, text) for text in map(content_of, events) if text)
    assert buffer == b""

    assert [text for _, text in arrivals] == CHUNKS
    times = [at for at, _ in arrivals]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # buffered, all five would land together at the end; relayed as produced, they are ~0.3 s apart
    assert times[-1] - times[0] >= 2 * EVENT_DELAY, gaps
    assert sum(gap >= EVENT_DELAY / 2 for gap in gaps) >= 3, gaps


def _spoofing_requests(base_url: str, key: str, count: int) -> list[httpx.Response]:
    with client(base_url, key) as http:
        return [
            http.post("/v1/chat/completions", json=chat_body(), headers={"x-forwarded-for": f"1.2.3.{i}"})
            for i in range(count)
        ]


def test_a_spoofed_x_forwarded_for_through_nginx_does_not_dodge_the_per_ip_limit(
    start_proxied: StartProxied, fake: FakeUpstreamThread
) -> None:
    nginx, (first, second) = start_proxied(FIVE_PER_MINUTE)
    _, key = first.create_key("10")

    responses = _spoofing_requests(nginx.base_url, key, 6)

    assert [r.status_code for r in responses] == [200] * 5 + [429], [r.text for r in responses]
    assert all(r.headers["server"].startswith("nginx") for r in responses)
    error_of(responses[5], 429)
    assert int(responses[5].headers["retry-after"]) >= 1
    # Control: the gateways do believe X-Forwarded-For from 127.0.0.1, so a header that reached them
    # unchanged WOULD open a fresh bucket. The limit held above only because nginx replaced it.
    for gateway in (first, second):
        with client(gateway.base_url, key) as direct:
            response = direct.post("/v1/chat/completions", json=chat_body(), headers={"x-forwarded-for": "9.9.9.9"})
        assert response.status_code == 200, response.text


def test_a_spoofed_x_forwarded_for_is_ignored_from_an_untrusted_peer(
    start_cluster: StartCluster, fake: FakeUpstreamThread
) -> None:
    (gateway,) = start_cluster({"server": {"trusted_proxies": []}, **FIVE_PER_MINUTE}, count=1)
    _, key = gateway.create_key("10")

    responses = _spoofing_requests(gateway.base_url, key, 6)

    assert [r.status_code for r in responses] == [200] * 5 + [429], [r.text for r in responses]
    error_of(responses[5], 429)
