"""Graceful shutdown: SIGTERM to a gateway with open streams.

Readiness turns 503 (or the port closes) at once and new chat requests are refused; the open streams
finish within ``server.shutdown_grace_seconds`` or are cut when it runs out. Either way, once the
process has exited, the database holds one usage row per stream and no hold is left 'held'.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.backends import backend_overrides, database_url
from tests.support.gateway import GatewayProcess, base_config, chat_body, deep_merge, wait_until
from tests.support.streams import StreamRead, refused, stored

STREAMS = 3
USAGE = {"prompt_tokens": 1000, "completion_tokens": 800}
EVENT_DELAY = 0.25
# role chunk + 3 words + finish + usage + [DONE]: 6 gaps, ~1.5 s -- inside a 5 s grace
SHORT_ANSWER = {"event_delay": EVENT_DELAY, "content_chunks": ["one ", "two ", "three"], "usage": USAGE}
# 8 words, 11 gaps: ~2.75 s -- past a grace of 1 s, let alone none
LONG_ANSWER = {"event_delay": EVENT_DELAY, "content_chunks": [f"w{i} " for i in range(8)], "usage": USAGE}


def gateway_with_grace(workdir: Path, upstream_url: str, grace: float) -> GatewayProcess:
    config = deep_merge(base_config(upstream_url, database_url(workdir)), backend_overrides())
    return GatewayProcess(workdir, deep_merge(config, {"server": {"shutdown_grace_seconds": grace}}))


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread
) -> Iterator[dict[str, GatewayProcess]]:
    """Two gateways of their own, started side by side: each test stops one for good."""
    built = {
        "generous": gateway_with_grace(tmp_path_factory.mktemp("grace-5"), upstream.url, 5),
        "grace-1": gateway_with_grace(tmp_path_factory.mktemp("grace-1"), upstream.url, 1),
        "grace-0": gateway_with_grace(tmp_path_factory.mktemp("grace-0"), upstream.url, 0),
    }
    try:
        with ThreadPoolExecutor(len(built)) as pool:
            list(pool.map(lambda g: g.start(), built.values()))
        yield built
    finally:
        for gateway in built.values():
            gateway.kill()


def sigterm_with_open_streams(
    gateway: GatewayProcess, fake: FakeUpstreamThread, script: dict[str, Any]
) -> tuple[str, list[StreamRead]]:
    key_id, key = gateway.create_key("1")
    fake.enqueue(*[script] * STREAMS)
    reads = [StreamRead() for _ in range(STREAMS)]
    threads = [threading.Thread(target=read.read, args=(gateway, key)) for read in reads]
    for thread in threads:
        thread.start()
    try:
        # SIGTERM once every stream has forwarded content, so each has something to be billed for
        for read in reads:
            assert read.first_content.wait(10), "no content arrived on a stream"
        assert all(read.status == 200 and read.error is None for read in reads)
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)

        # not ready any more: 503 while the port is still open, then refused
        wait_until(lambda: refused(gateway, "GET", "/readyz") in (503, None), timeout=5, interval=0.02)
        status = refused(
            gateway, "POST", "/v1/chat/completions", json=chat_body(), headers={"authorization": f"Bearer {key}"}
        )
        assert status in (503, None), status
    finally:
        for thread in threads:
            thread.join(20)
    assert not any(thread.is_alive() for thread in threads)
    # uvicorn re-raises the signal once it has shut down cleanly, so -SIGTERM is a normal exit here
    assert gateway.proc.wait(20) in (0, -signal.SIGTERM), gateway.logs()
    assert len(fake.requests) == STREAMS  # the refused request never reached the upstream
    return key_id, reads


def test_sigterm_lets_open_streams_finish_within_the_grace_and_settles_each(
    gateways: dict[str, GatewayProcess], fake: FakeUpstreamThread
) -> None:
    gateway = gateways["generous"]
    key_id, reads = sigterm_with_open_streams(gateway, fake, SHORT_ANSWER)
    for read in reads:
        assert read.error is None, read.error
        assert read.complete, read.text
        assert '"content":"three"' in read.text
    after = stored(gateway, key_id)
    assert len(after.usage) == STREAMS, after.usage
    assert all(row["status"] == "ok" and not row["partial"] for row in after.usage), after.usage
    assert all(row["completion_tokens"] == 800 for row in after.usage)
    assert (after.open_holds, after.key_held) == (0, 0)


@pytest.mark.parametrize("grace", ["grace-1", "grace-0"])  # 0: no grace at all, streams are cut at once
def test_sigterm_cuts_streams_longer_than_the_grace_and_still_settles_each(
    gateways: dict[str, GatewayProcess], fake: FakeUpstreamThread, grace: str
) -> None:
    gateway = gateways[grace]
    key_id, reads = sigterm_with_open_streams(gateway, fake, LONG_ANSWER)
    for read in reads:
        assert not read.complete, read.text
        assert '"content":"w0 "' in read.text  # some of the answer had arrived when the grace ran out
        assert '"code":"service_unavailable"' in read.text, read.text  # cut with an error event, not silently
    after = stored(gateway, key_id)
    assert len(after.usage) == STREAMS, after.usage
    assert all(row["partial"] and row["completion_tokens"] > 0 and row["cost"] > 0 for row in after.usage)
    assert (after.open_holds, after.key_held) == (0, 0)
