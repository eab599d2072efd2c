"""A balance (or monthly quota) funded for exactly N worst-case requests, hit by 10 x N at once.

The worst case of one request is its hold (``app.pipeline.plan_request``)::

    hold = int(prompt_estimate * max(input, cached_input) * (1 + prompt_margin)) + max_tokens * output

With one message "hi" the estimate is 4 (message overhead) + 1 (two ASCII characters) = 5 tokens.
Each success reports exactly max_tokens of output, so it really costs (almost) its hold, and what
it leaves behind is far less than another hold: at most N can ever succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.fake_upstream import FakeUpstreamThread
from app.money.tokens import estimate_prompt_tokens
from app.money.units import UNITS_PER_USD, units_to_usd, usd_to_units
from tests.support.gateway import MASTER_KEY, GatewayProcess, dedicated_gateway

N = 6
MAX_TOKENS = 100
MESSAGES = [{"role": "user", "content": "hi"}]
PRICE_IN, PRICE_OUT = usd_to_units("0.47") // 10**6, usd_to_units("2.37") // 10**6  # units per token
MARGIN = 0.1  # billing.prompt_margin default
PROMPT = estimate_prompt_tokens(MESSAGES)
HOLD = int(PROMPT * PRICE_IN * (1 + MARGIN)) + MAX_TOKENS * PRICE_OUT
COST = PROMPT * PRICE_IN + MAX_TOKENS * PRICE_OUT
HIGH_LIMITS = {"limits": {"key_defaults": {"rpm": 100_000, "tpm": 1_000_000_000, "max_concurrent": 1_000}}}


@pytest.fixture(scope="module")
def busy_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[GatewayProcess]:
    with dedicated_gateway(tmp_path_factory.mktemp("money"), upstream.url, HIGH_LIMITS) as gateway:
        yield gateway


def test_the_worst_case_formula_matches_this_test() -> None:
    assert PROMPT == 5
    assert HOLD == 2_585_000 + 237_000_000
    assert COST < HOLD < COST + 1_000_000
    assert N * (HOLD - COST) < HOLD  # what N successes leave behind never funds another one


async def _hammer(gateway: GatewayProcess, key: str, key_id: str) -> tuple[list[int], list[dict[str, Any]]]:
    """Fire 10 x N requests (half streamed) at once while sampling the key; return statuses and samples."""
    samples: list[dict[str, Any]] = []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=20 * N, max_keepalive_connections=20 * N)
    auth = {"authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=gateway.base_url, timeout=30, limits=limits) as http,
        httpx.AsyncClient(
            base_url=gateway.base_url, timeout=10, headers={"authorization": f"Bearer {MASTER_KEY}"}
        ) as admin,
    ):

        async def one(i: int) -> int:
            body = {
                "model": "doubao-seed-2.0-pro",
                "messages": MESSAGES,
                "max_tokens": MAX_TOKENS,
                "stream": i % 2 == 1,
            }
            async with http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as response:
                text = (await response.aread()).decode()
            if response.status_code == 200 and body["stream"]:
                assert text.endswith("data: [DONE]\n\n"), text[-300:]
            return response.status_code

        async def watch() -> None:
            for _ in range(2_000):  # bounded: ~20 s at most
                samples.append((await admin.get(f"/admin/keys/{key_id}")).json())
                if done.is_set():
                    return
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(40):
                statuses = await asyncio.gather(*(one(i) for i in range(10 * N)))
        finally:
            done.set()
            await watcher
    return list(statuses), samples


def _script(fake: FakeUpstreamThread) -> None:
    # every request that gets through overlaps the others and reports exactly its worst-case output
    usage = {"prompt_tokens": PROMPT, "completion_tokens": MAX_TOKENS}
    fake.enqueue(*[{"delay_before_headers": 0.4, "event_delay": 0.02, "usage": usage}] * (10 * N))


def _check_books(gateway: GatewayProcess, key_id: str, successes: int) -> None:
    rows = gateway.usage(key_id)
    assert len(rows) == successes
    assert {row["cost_usd"] for row in rows} == {units_to_usd(COST)}
    assert len({row["request_id"] for row in rows}) == successes
    books = gateway.ledger()
    assert books["balanced"] is True, books
    assert books["held"] == 0, books
    assert books["available"] >= 0


async def test_balance_for_n_worst_cases_admits_exactly_n_of_10n_concurrent_requests(
    busy_gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    gateway = busy_gateway
    _script(fake)
    key_id, key = gateway.create_key(units_to_usd(N * HOLD))
    statuses, samples = await _hammer(gateway, key, key_id)
    assert sorted(set(statuses)) == [200, 402], statuses
    assert statuses.count(200) == N
    assert len(fake.requests) == N
    held = [usd_to_units(sample["held_usd"]) for sample in samples]
    assert max(held) > HOLD  # the requests really overlapped
    assert max(held) <= N * HOLD
    assert all(not sample["balance_usd"].startswith("-") for sample in samples)
    view = gateway.key(key_id)
    assert view["held_usd"] == "0.00"
    assert usd_to_units(view["balance_usd"]) == N * (HOLD - COST)
    assert usd_to_units(view["spent_usd"]) == N * COST
    _check_books(gateway, key_id, N)


async def test_monthly_quota_for_n_worst_cases_admits_exactly_n_of_10n_concurrent_requests(
    busy_gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    gateway = busy_gateway
    _script(fake)
    key_id, key = gateway.create_key("10", monthly_quota_usd=units_to_usd(N * HOLD))
    statuses, samples = await _hammer(gateway, key, key_id)
    assert sorted(set(statuses)) == [200, 429], statuses
    assert statuses.count(200) == N
    for sample in samples:
        assert usd_to_units(sample["held_usd"]) + usd_to_units(sample["spent_usd"]) <= N * HOLD, sample
    view = gateway.key(key_id)
    assert usd_to_units(view["spent_usd"]) == N * COST
    assert usd_to_units(view["balance_usd"]) == 10 * UNITS_PER_USD - N * COST
    _check_books(gateway, key_id, N)
