"""Two `seedgate serve` processes on one Postgres database and one Redis keep one set of books and limits.

The worst case of one request is its hold (``app.pipeline.plan_request``)::

    hold = int(prompt_estimate * max(input, cached_input) * (1 + prompt_margin)) + max_tokens * output

With one message "hi" the estimate is 5 tokens. Each success reports exactly ``max_tokens`` of output,
so it costs (almost) its hold, and what N successes leave behind never funds another one.
"""

from __future__ import annotations

import asyncio
import re
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from redis import Redis

from app.fake_upstream import FakeUpstreamThread
from app.money.tokens import estimate_prompt_tokens
from app.money.units import price_per_token, units_to_usd, usd_to_units
from tests.scaleout.conftest import RedisServer, StartCluster
from tests.support.gateway import MASTER_KEY, GatewayProcess, api_client, chat_body, error_of, settled_rows, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

N = 6
REQUESTS = 6 * N
MAX_TOKENS = 100
MESSAGES = [{"role": "user", "content": "hi"}]
PRICE_IN, PRICE_OUT = price_per_token(Decimal("0.47")), price_per_token(Decimal("2.37"))  # base_config's pro model
PROMPT = estimate_prompt_tokens(MESSAGES)
HOLD = int(PROMPT * PRICE_IN * (1 + 0.1)) + MAX_TOKENS * PRICE_OUT  # billing.prompt_margin default: 0.1
COST = PROMPT * PRICE_IN + MAX_TOKENS * PRICE_OUT
HIGH_LIMITS = {"limits": {"key_defaults": {"rpm": 100_000, "tpm": 1_000_000_000, "max_concurrent": 1_000}}}
FALLBACK_WARNING = re.compile(r" WARNING app\.limits\.fallback: rate limit backend unreachable")


def test_the_worst_case_formula_matches_this_test() -> None:
    assert PROMPT == 5
    assert HOLD == 2_585_000 + 237_000_000
    assert COST < HOLD
    assert N * (HOLD - COST) < HOLD  # what N successes leave behind never funds another one


def chat(gateway: GatewayProcess, key: str, **headers: str) -> httpx.Response:
    with api_client(gateway, key) as client:
        return client.post("/v1/chat/completions", json=chat_body(), headers=headers)


async def _hammer(gateways: list[GatewayProcess], key: str, key_id: str) -> tuple[list[int], list[dict[str, Any]]]:
    """Fire REQUESTS at once, alternating instances (half streamed), while sampling the key through both."""
    samples: list[dict[str, Any]] = []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    auth = {"authorization": f"Bearer {key}"}
    admin_auth = {"authorization": f"Bearer {MASTER_KEY}"}
    async with (
        httpx.AsyncClient(timeout=30, limits=limits) as http,
        httpx.AsyncClient(timeout=10, headers=admin_auth) as admin,
    ):

        async def one(i: int) -> int:
            gateway = gateways[i % len(gateways)]
            body = {
                "model": "doubao-seed-2.0-pro",
                "messages": MESSAGES,
                "max_tokens": MAX_TOKENS,
                "stream": i % 4 >= 2,
            }
            url = gateway.base_url + "/v1/chat/completions"
            async with http.stream("POST", url, json=body, headers=auth) as response:
                text = (await response.aread()).decode()
            if response.status_code == 200 and body["stream"]:
                assert text.endswith("data: [DONE]\n\n"), text[-300:]
            return response.status_code

        async def watch() -> None:
            for i in range(2_000):  # bounded: ~20 s at most
                gateway = gateways[i % len(gateways)]
                samples.append((await admin.get(f"{gateway.base_url}/admin/keys/{key_id}")).json())
                if done.is_set():
                    return
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(40):
                statuses = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        finally:
            done.set()
            await watcher
    return list(statuses), samples


def test_a_balance_for_n_worst_cases_admits_at_most_n_requests_across_both_instances(
    start_cluster: StartCluster, fake: FakeUpstreamThread
) -> None:
    first, second = start_cluster(HIGH_LIMITS)
    usage = {"prompt_tokens": PROMPT, "completion_tokens": MAX_TOKENS}
    # every request that gets through overlaps the others and reports exactly its worst-case output
    fake.enqueue(*[{"delay_before_headers": 0.4, "event_delay": 0.02, "usage": usage}] * REQUESTS)
    key_id, key = first.create_key(units_to_usd(N * HOLD))

    statuses, samples = asyncio.run(_hammer([first, second], key, key_id))

    assert set(statuses) <= {200, 402}, statuses
    assert statuses.count(200) <= N, statuses
    assert statuses.count(200) == N, statuses  # funded for N, all arriving while the first N are in flight
    assert len(fake.requests) == N  # the refused ones never reached the upstream
    assert all(not sample["balance_usd"].startswith("-") for sample in samples), samples
    held = [usd_to_units(sample["held_usd"]) for sample in samples]
    assert max(held) > HOLD  # the requests really overlapped
    assert max(held) <= N * HOLD

    rows = settled_rows(second, key_id, N)
    assert {row["cost_usd"] for row in rows} == {units_to_usd(COST)}
    assert len({row["request_id"] for row in rows}) == N
    view = first.key(key_id)
    assert usd_to_units(view["balance_usd"]) == N * (HOLD - COST)
    assert usd_to_units(view["spent_usd"]) == N * COST
    for gateway in (first, second):
        books = gateway.ledger()
        assert books["balanced"] is True, books
        assert books["held"] == 0, books
        assert books["available"] >= 0, books


def test_a_per_key_rpm_limit_counts_requests_on_both_instances_together(
    start_cluster: StartCluster, fake: FakeUpstreamThread
) -> None:
    first, second = start_cluster()
    _, key = first.create_key("10", rpm=5)

    responses = [chat((first, second)[i % 2], key) for i in range(10)]

    assert [r.status_code for r in responses] == [200] * 5 + [429] * 5, [r.text for r in responses]
    for response in responses[5:]:
        error_of(response, 429)
        assert int(response.headers["retry-after"]) >= 1, response.headers
    assert len(fake.requests) == 5


def test_a_revoke_on_one_instance_is_honoured_by_the_other_within_seconds(
    start_cluster: StartCluster, fake: FakeUpstreamThread
) -> None:
    first, second = start_cluster({"auth": {"cache_ttl_seconds": 2}})
    key_id, key = first.create_key("10")
    assert chat(second, key).status_code == 200  # the second instance now has the key in its auth cache

    with first.admin() as admin:
        admin.delete(f"/admin/keys/{key_id}").raise_for_status()
    revoked = time.monotonic()
    assert error_of(chat(first, key), 401)["code"] == "revoked_api_key"

    def refused() -> httpx.Response | None:
        response = chat(second, key)
        return response if response.status_code == 401 else None

    response = wait_until(refused, timeout=5, interval=0.1)
    assert time.monotonic() - revoked < 5
    assert error_of(response, 401)["code"] == "revoked_api_key"


def test_a_limit_change_on_one_instance_is_honoured_by_the_other_within_seconds(
    start_cluster: StartCluster, fake: FakeUpstreamThread
) -> None:
    first, second = start_cluster({"auth": {"cache_ttl_seconds": 2}})
    key_id, key = first.create_key("10")
    assert [chat(second, key).status_code for _ in range(3)] == [200] * 3

    with first.admin() as admin:
        admin.patch(f"/admin/keys/{key_id}", json={"rpm": 3}).raise_for_status()
    error_of(chat(first, key), 429)

    def limited() -> httpx.Response | None:
        response = chat(second, key)
        return response if response.status_code == 429 else None

    error_of(wait_until(limited, timeout=5, interval=0.1), 429)


def test_a_topup_on_one_instance_is_usable_on_the_other_at_once(
    start_cluster: StartCluster, fake: FakeUpstreamThread
) -> None:
    first, second = start_cluster()
    key_id, key = first.create_key("0")
    assert chat(second, key).status_code == 402

    with first.admin() as admin:
        admin.post(f"/admin/keys/{key_id}/topup", json={"amount_usd": "1"}).raise_for_status()

    assert second.key(key_id)["balance_usd"] == "1.00"
    assert chat(second, key).status_code == 200  # balances live in SQL, never in a cache


def test_requests_keep_flowing_and_limits_count_locally_when_redis_dies(
    start_cluster: StartCluster, private_redis: RedisServer, fake: FakeUpstreamThread
) -> None:
    first, second = start_cluster(redis_url=private_redis.url)
    prefix = first.config["redis"]["prefix"]
    _, key = first.create_key("10", rpm=5)
    assert [chat(gateway, key).status_code for gateway in (first, second)] == [200, 200]
    with Redis.from_url(private_redis.url) as redis:
        assert redis.keys(f"{prefix}*"), "the limits were not counted in the private Redis"

    private_redis.kill()
    started = time.monotonic()
    after_first = [chat(first, key).status_code for _ in range(5)]
    after_second = [chat(second, key).status_code for _ in range(5)]
    elapsed = time.monotonic() - started

    # each process now counts alone from zero: five more per process, then its own limit holds
    assert after_first == [200] * 5
    assert after_second == [200] * 5
    error_of(chat(first, key), 429)
    assert elapsed < 5, f"requests stalled on the dead Redis: {elapsed:.1f} s for 10"
    for gateway in (first, second):
        logs = gateway.logs()
        assert len(FALLBACK_WARNING.findall(logs)) == 1, logs
        assert "Traceback" not in logs, logs
