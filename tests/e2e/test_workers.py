"""``seedgate serve --workers 2`` as operators run it: secrets through ``${VAR}``, shared socket, drain, crash.

Every secret reaches the YAML only as ``${VAR}`` and each worker loads the file and the environment
itself, so the real values hold in every worker (handing settings over as JSON used to turn each into
``**********``). On SIGTERM every worker drains like a single process; a worker killed with SIGKILL is
replaced and the holds it owned are recovered exactly once by the others.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from app.db import Database
from app.fake_upstream import FakeUpstreamThread
from tests.support import backends
from tests.support.books import Books, make_catalog
from tests.support.gateway import (
    MASTER_KEY,
    UPSTREAM_KEY,
    api_client,
    chat_body,
    deep_merge,
    free_port,
    settled_rows,
    wait_until,
)
from tests.support.streams import refused, stored
from tests.support.workers import WorkersGateway, require_services, streams_on_every_worker, workers_config

# worker start-up (a fresh interpreter per worker) is slow on a busy machine: room beyond the default 60 s
pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

LEASES = {"billing": {"hold_ttl_seconds": 2, "recovery_interval_seconds": 0.5, "checkpoint_interval_seconds": 0.5}}
GRACE = 3
USAGE = {"prompt_tokens": 1000, "completion_tokens": 800}
# ~3 s: what is left of it when SIGTERM comes fits in the grace
SHORT = {"event_delay": 0.25, "content_chunks": [f"s{i} " for i in range(8)], "usage": USAGE}
# ~7.5 s: cut by the grace
LONG = {"event_delay": 0.25, "content_chunks": [f"l{i} " for i in range(28)], "usage": USAGE}
# ~8 s: outlives a SIGKILL a few seconds after it started
STEADY = {"event_delay": 0.1, "content_chunks": [f"k{i} " for i in range(80)], "usage": USAGE}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[WorkersGateway]:
    """One `--workers 2` gateway for the module (worker start-up is the slow part); the SIGTERM test,
    last in the file, stops it for good."""
    require_services()
    config = workers_config(upstream.url, deep_merge(LEASES, {"server": {"shutdown_grace_seconds": GRACE}}))
    started = WorkersGateway(tmp_path_factory.mktemp("workers"), config)
    try:
        yield started.start()
    finally:
        started.kill()


def test_every_worker_has_the_real_master_upstream_key_and_redis_url(
    gateway: WorkersGateway, fake: FakeUpstreamThread
) -> None:
    for wrong in ("**********", MASTER_KEY + "x", MASTER_KEY[:-1], "Bearer"):
        for _ in range(4):  # new connections: several workers answer
            with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
                response = http.get("/admin/keys", headers={"authorization": f"Bearer {wrong}"})
            assert response.status_code == 401, (wrong, response.text)
    pids = set()
    for _ in range(40):
        with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
            response = http.get("/admin/keys", headers={"authorization": f"Bearer {MASTER_KEY}"})
            assert response.status_code == 200, response.text
            pids.add(http.get("/healthz").json()["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"requests never reached both workers: {pids}"

    _, key = gateway.create_key("1")
    for _ in range(4):
        with api_client(gateway, key) as http:
            assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
    assert len(fake.requests) == 4
    assert {r["headers"]["authorization"] for r in fake.requests} == {f"Bearer {UPSTREAM_KEY}"}

    client = Redis.from_url(backends.redis_url())
    try:
        prefix = gateway.config["redis"]["prefix"]
        assert list(client.scan_iter(match=f"{prefix}*", count=1000)), "no worker counted its limits in Redis"
    finally:
        client.close()


def test_a_worker_killed_mid_stream_is_replaced_and_its_holds_recovered_exactly_once(
    gateway: WorkersGateway, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("5")
    reads, threads, _ = streams_on_every_worker(gateway, fake, key, [STEADY])
    time.sleep(1.2)  # past a checkpoint: every open hold is marked as sent upstream
    inflight = gateway.inflight_by_pid(want=2)  # the streams each worker holds open now
    victim, survivor = sorted(inflight)
    assert inflight[victim] > 0, inflight
    os.kill(victim, signal.SIGKILL)

    with api_client(gateway, key) as http:  # the survivor (and soon the replacement) keeps serving
        for _ in range(3):
            assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
    for thread in threads:
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads)
    cut = [read for read in reads if not read.complete]
    assert len(cut) == inflight[victim], inflight
    assert all(read.error is None and "k79" in read.text for read in reads if read.complete)

    rows = settled_rows(gateway, key_id, count=len(reads) + 3, timeout=15)
    assert sorted(row["status"] for row in rows).count("recovered") == len(cut), rows
    slots = f"{gateway.config['redis']['prefix']}conc:{key_id}"  # the key's concurrency slots in Redis
    with Redis.from_url(backends.redis_url()) as redis:  # the dead worker's lapse with its lease, not the timeout
        wait_until(lambda: redis.zcard(slots) == 0, timeout=10, interval=0.2)
    assert len({row["request_id"] for row in rows}) == len(rows)
    time.sleep(1.5)  # three more recovery rounds: nothing recovered twice
    assert len(gateway.usage(key_id)) == len(rows)
    assert gateway.ledger()["balanced"] is True

    assert "exited with status -9; starting a replacement" in gateway.logs()
    wait_until(lambda: gateway.logs().count(" ready (pid ") >= 3, timeout=30, interval=0.2)
    wait_until(lambda: (gateway.probe() or {}).get("pid") not in (victim, survivor), timeout=10, interval=0.02)


def test_sigterm_drains_every_worker_settles_every_stream_and_exits_0(
    gateway: WorkersGateway, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("5")
    reads, threads, _ = streams_on_every_worker(gateway, fake, key, [SHORT, LONG])
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: refused(gateway, "GET", "/readyz") in (503, None), timeout=5, interval=0.02)
    status = refused(
        gateway, "POST", "/v1/chat/completions", json=chat_body(), headers={"authorization": f"Bearer {key}"}
    )
    assert status in (503, None), status
    for thread in threads:
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads)
    assert gateway.proc.wait(30) == 0, gateway.logs()

    for read in reads:
        assert read.error is None, read.error
        cut = '"code":"service_unavailable"' in read.text
        assert read.complete != cut, read.text  # finished, or cut with the error event: never silently
    assert any(read.complete for read in reads)
    assert any(not read.complete for read in reads)
    after = stored(gateway, key_id)
    assert len(after.usage) == len(reads) == len(fake.requests), after.usage
    assert (after.open_holds, after.key_held) == (0, 0)
    asyncio.run(_check_books(gateway.config["database"]["url"]))


async def _check_books(url: str) -> None:
    db = Database(url)
    try:
        await Books(db, make_catalog()).check()
    finally:
        await db.dispose()


def test_a_worker_failing_its_start_up_stops_the_gateway_with_the_reason(
    tmp_path: Path, upstream: FakeUpstreamThread
) -> None:
    require_services()
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    # SQLite: `serve` migrates it in-process, and the workers stop before they would open it
    config = workers_config(upstream.url, db_url=f"sqlite+aiosqlite:///{tmp_path}/seedgate.db")
    failing = WorkersGateway(tmp_path, config, redis_url=dead_redis)
    with pytest.raises(RuntimeError, match="exited with 1") as failed:
        failing.start(timeout=60)
    assert "failed to start: Redis (redis.url) did not answer PING" in str(failed.value)
    failing.kill()
